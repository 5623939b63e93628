"""The server fixtures themselves: each real server answers, identifies itself, and stops."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from servers import LITELLM_ROUTES, ServerStartError, start_xllamacpp


def _get(url: str, key: str | None = None):
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.headers, json.loads(resp.read())


def test_xllamacpp_server_is_llama_cpp(xllamacpp_server):
    status, headers, body = _get(f"{xllamacpp_server.url}/models")
    assert status == 200 and headers["Server"] == "llama.cpp"
    assert body["data"][0]["id"] == "smollm2" and body["data"][0]["owned_by"] == "llamacpp"
    _, _, props = _get(f"{xllamacpp_server.base}/props")
    assert props["total_slots"] == 2
    assert xllamacpp_server.startup_s > 0


def test_start_xllamacpp_replica_stops(tmp_path):
    handle = start_xllamacpp(tmp_path, slots=1)
    try:
        _, _, props = _get(f"{handle.base}/props")
        assert props["total_slots"] == 1
    finally:
        handle.stop()
    assert not handle.alive
    with pytest.raises(OSError):
        _get(f"{handle.url}/models")


def test_xllamacpp_bad_model_fails_loudly_with_log(tmp_path):
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"GGUF nonsense")
    with pytest.raises(ServerStartError) as info:
        start_xllamacpp(tmp_path, model_path=str(bad), timeout=60)
    assert "exited" in str(info.value) and "not-a-model.gguf" in str(info.value)


def test_vllm_server_is_vllm(vllm_server):
    status, headers, body = _get(f"{vllm_server.url}/models")
    assert status == 200 and headers["server"] == "uvicorn"
    assert body["data"][0]["id"] == "smollm2" and body["data"][0]["owned_by"] == "vllm"
    _, _, version = _get(f"{vllm_server.base}/version")
    assert version["version"].startswith("0.")


def test_litellm_proxy_routes_every_backend(litellm_proxy):
    status, _, body = _get(f"{litellm_proxy.url}/models", litellm_proxy.api_key)
    assert status == 200
    assert {m["id"] for m in body["data"]} == set(LITELLM_ROUTES)
    # Refused without the master key. litellm 1.108 without a database answers a missing key
    # with a plain-text 500 and a wrong key with 400 "No connected db." (see docs/servers.md).
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(f"{litellm_proxy.url}/models")
    assert info.value.code >= 400
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(f"{litellm_proxy.url}/models", "sk-wrong")
    assert info.value.code in (400, 401, 403)
    assert litellm_proxy.api_key not in repr(litellm_proxy)
