"""Proxies and TLS (docs/security.md, "Proxies", "TLS") on both transports, through a real
proxy on loopback (Debian's tinyproxy, started here with its own config on a free port) to a
loopback HTTPS server whose certificate comes from a test CA (trustme).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import free_port
from fault_server import FaultServer, Step, chat_body, chat_chunks

from gen_ai import APIConnectionError, create_client
from gen_ai._http_policy import HTTPOptions, _NoProxy
from gen_ai.errors import ConfigurationError

MESSAGES = [{"role": "user", "content": "hi"}]
KEY = "sk-proxied-SECRET-0123456789"
PROXY_USER, PROXY_PASSWORD = "proxyuser", "ProxyPw-0123456789"
PROXY_TOKEN = "cHJveHl1c2VyOlByb3h5UHctMDEyMzQ1Njc4OQ=="  # base64 of user:password
PROXY_VARS = ("https_proxy", "http_proxy", "all_proxy", "no_proxy", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY",
              "NO_PROXY", "REQUEST_METHOD")


@pytest.fixture(autouse=True)
def _no_ambient_proxy(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


class TinyProxy:
    def __init__(self, directory: Path, auth: bool) -> None:
        exe = shutil.which("tinyproxy")
        if exe is None:
            raise RuntimeError("tinyproxy is not installed: apt-get install -y tinyproxy (scripts/test.sh does)")
        self.port = free_port()
        self.log = directory / "tinyproxy.log"
        conf = directory / "tinyproxy.conf"
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 30", "LogLevel Connect",
                 f'LogFile "{self.log}"', "MaxClients 50", "Allow 127.0.0.1"]
        if auth:
            lines.append(f"BasicAuth {PROXY_USER} {PROXY_PASSWORD}")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([exe, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tinyproxy exited with {self.proc.returncode}: "
                                   f"{self.proc.stderr.read().decode(errors='replace') if self.proc.stderr else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("tinyproxy did not listen within 10 s") from None
                time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth_url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The request lines tinyproxy logged, without the HTTP version (``CONNECT host:port``,
        ``POST http://...``)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line.split("): ", 1)[1].rsplit(" ", 1)[0] for line in text.splitlines()
                if "Request (file descriptor" in line]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def proxy(tmp_path):
    p = TinyProxy(tmp_path, auth=True)
    yield p
    p.close()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _answer(rec: Any) -> Step:
    return Step(200, chunks=chat_chunks(["pro", "xied"])) if b'"stream": true' in rec.body else \
        Step(200, chat_body("proxied"))


def _tls_server(ca: trustme.CA, *, client_ca: trustme.CA | None = None) -> FaultServer:
    server = FaultServer(default=_answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    server._httpd.socket = context.wrap_socket(server._httpd.socket, server_side=True)
    return server


@pytest.fixture
def https_server(ca):
    server = _tls_server(ca)
    yield server
    server.close()


def https_url(server: FaultServer) -> str:
    return f"https://127.0.0.1:{server.port}/v1"


def run(client: Any, mode: str) -> Any:
    if mode == "sync":
        return client.run_chat_completions(MESSAGES)
    if mode == "sync-stream":
        return "".join(client.run_chat_completions_stream(MESSAGES))
    if mode == "batch":  # a private pool: the lean transport direct, aiohttp through a proxy
        results, errors = client.run_chat_completions_batch([MESSAGES], return_error=True, progress=False)
        if errors[0] is not None:  # the error dict as the exception it was made from
            error = APIConnectionError(errors[0]["message"], suggestion=errors[0]["suggestion"])
            error.retryable = errors[0]["retryable"]
            raise error
        return str(results[0])

    async def main() -> Any:
        async with client:
            if mode == "async":
                return await client.arun_chat_completions(MESSAGES)
            return "".join([d async for d in client.arun_chat_completions_stream(MESSAGES)])

    return asyncio.run(main())


MODES = ["sync", "sync-stream", "async", "async-stream", "batch"]


# -- through the proxy ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_https_through_proxy_connect_tunnel(proxy, https_server, ca_file, mode, caplog):
    caplog.set_level(logging.DEBUG, logger="gen_ai")
    client = create_client(endpoint=https_url(https_server), model_name="m", api_key=KEY, proxy=proxy.auth_url,
                           verify=ca_file, max_retries=0)
    assert run(client, mode) == "proxied"
    assert proxy.requests() == [f"CONNECT 127.0.0.1:{https_server.port}"]
    got = https_server.requests[0].headers
    assert got["authorization"] == f"Bearer {KEY}"  # the API key went through the tunnel to the target
    assert "proxy-authorization" not in got  # and the proxy's credentials stayed with the proxy
    for secret in (PROXY_PASSWORD, PROXY_TOKEN, KEY):
        assert secret not in repr(client) and secret not in caplog.text


@pytest.mark.parametrize("mode", MODES)
def test_plain_http_through_proxy(proxy, fault_server, mode):
    fault_server.default = _answer
    client = create_client(endpoint=fault_server.url, model_name="m", api_key=KEY, proxy=proxy.auth_url,
                           max_retries=0)
    assert run(client, mode) == "proxied"
    assert proxy.requests() == [f"POST http://127.0.0.1:{fault_server.port}/v1/chat/completions"]
    got = fault_server.requests[0].headers
    assert "tinyproxy" in got.get("via", "") and got["authorization"] == f"Bearer {KEY}"
    assert "proxy-authorization" not in got


@pytest.mark.parametrize("mode", ["sync", "async-stream"])
@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
def test_environment_proxy(proxy, https_server, ca_file, monkeypatch, variable, mode):
    monkeypatch.setenv(variable, proxy.auth_url)
    client = create_client(endpoint=https_url(https_server), model_name="m", verify=ca_file, max_retries=0)
    assert run(client, mode) == "proxied"
    assert proxy.requests() == [f"CONNECT 127.0.0.1:{https_server.port}"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_http_proxy_variable_is_for_http_targets(proxy, fault_server, https_server, ca_file, monkeypatch, mode):
    fault_server.default = _answer
    monkeypatch.setenv("HTTP_PROXY", proxy.auth_url)
    assert run(create_client(endpoint=https_url(https_server), model_name="m", verify=ca_file), mode) == "proxied"
    assert proxy.requests() == []  # https is not proxied by HTTP_PROXY
    assert run(create_client(endpoint=fault_server.url, model_name="m"), mode) == "proxied"
    assert len(proxy.requests()) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "127.0.0.0/8", "*", "example.com, 127.0.0.1"])
def test_no_proxy_goes_direct(proxy, https_server, ca_file, monkeypatch, no_proxy, mode):
    monkeypatch.setenv("HTTPS_PROXY", proxy.auth_url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert run(create_client(endpoint=https_url(https_server), model_name="m", verify=ca_file), mode) == "proxied"
    assert proxy.requests() == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_trust_env_false_and_explicit_proxy_false(proxy, https_server, ca_file, monkeypatch, mode):
    monkeypatch.setenv("HTTPS_PROXY", proxy.auth_url)
    for options in ({"trust_env": False}, {"proxy": False}):
        client = create_client(endpoint=https_url(https_server), model_name="m", verify=ca_file, **options)
        assert run(client, mode) == "proxied"
    assert proxy.requests() == []


@pytest.mark.parametrize("mode", MODES)
def test_wrong_proxy_password_is_reported_and_scrubbed(proxy, https_server, ca_file, mode, caplog):
    caplog.set_level(logging.DEBUG, logger="gen_ai")
    wrong = "Wrong-Proxy-Password-42"
    url = f"http://{PROXY_USER}:{wrong}@127.0.0.1:{proxy.port}"
    client = create_client(endpoint=https_url(https_server), model_name="m", api_key=KEY, proxy=url,
                           verify=ca_file, max_retries=2)
    with pytest.raises(APIConnectionError) as info:
        run(client, mode)
    error = info.value
    # tinyproxy answers a CONNECT with bad credentials 401 (a plain request 407); not retried
    assert ("401" in str(error) or "407" in str(error)) and not error.retryable and "proxy" in error.suggestion
    import base64

    token = base64.b64encode(f"{PROXY_USER}:{wrong}".encode()).decode()
    for text in (str(error), repr(error), str(error.to_dict()), repr(client), caplog.text):
        assert wrong not in text and token not in text
    assert https_server.requests == [] and len(proxy.requests()) == 1


def test_proxy_url_errors_do_not_show_the_password():
    for bad in ("socks5://u:Secret-Pass-1@127.0.0.1:1080", "https://u:Secret-Pass-1@proxy:443"):
        with pytest.raises(ConfigurationError) as info:
            create_client(endpoint="http://127.0.0.1:9/v1", model_name="m", proxy=bad)
        assert "Secret-Pass-1" not in str(info.value) and info.value.field == "proxy"


# -- TLS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_unknown_ca_is_refused_then_verify_bundle_works(https_server, ca_file, mode):
    with pytest.raises(APIConnectionError) as info:
        run(create_client(endpoint=https_url(https_server), model_name="m", max_retries=0), mode)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) or "certificate verify failed" in str(info.value)
    assert run(create_client(endpoint=https_url(https_server), model_name="m", verify=ca_file), mode) == "proxied"


@pytest.mark.parametrize("mode", ["sync", "async-stream"])
def test_verify_false_works_and_warns(https_server, mode, caplog):
    with caplog.at_level(logging.WARNING, logger="gen_ai"):
        client = create_client(endpoint=https_url(https_server), model_name="m", verify=False)
    assert "verification is OFF" in caplog.text
    assert run(client, mode) == "proxied"


def test_bad_tls_options_fail_before_any_call(tmp_path):
    not_pem = tmp_path / "x.pem"
    not_pem.write_text("not a certificate")
    for options, field in (({"verify": str(tmp_path / "missing.pem")}, "verify"), ({"verify": str(not_pem)}, "verify"),
                           ({"verify": 3}, "verify"), ({"cert": str(not_pem)}, "cert"),
                           ({"cert": (str(not_pem), str(not_pem))}, "cert")):
        with pytest.raises(ConfigurationError) as info:
            create_client(endpoint="https://127.0.0.1:9/v1", model_name="m", **options)
        assert info.value.field == field


@pytest.mark.parametrize("mode", ["sync", "sync-stream", "async", "async-stream"])
def test_client_certificate(ca, ca_file, tmp_path, mode):
    client_ca = trustme.CA()
    server = _tls_server(ca, client_ca=client_ca)
    try:
        issued = client_ca.issue_cert("client@example.com")
        cert_path, key_path = tmp_path / "client.pem", tmp_path / "client.key"
        issued.cert_chain_pems[0].write_to_path(str(cert_path))
        issued.private_key_pem.write_to_path(str(key_path))
        with pytest.raises(APIConnectionError):
            run(create_client(endpoint=https_url(server), model_name="m", verify=ca_file, max_retries=0), mode)
        client = create_client(endpoint=https_url(server), model_name="m", verify=ca_file,
                               cert=(str(cert_path), str(key_path)))
        assert run(client, mode) == "proxied"
        combined = tmp_path / "both.pem"
        combined.write_bytes(issued.private_key_and_cert_chain_pem.bytes())
        assert run(create_client(endpoint=https_url(server), model_name="m", verify=ca_file,
                                 cert=str(combined)), mode) == "proxied"
    finally:
        server.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_tls_and_proxy_together_with_client_cert(proxy, ca, ca_file, tmp_path, mode):
    client_ca = trustme.CA()
    server = _tls_server(ca, client_ca=client_ca)
    try:
        issued = client_ca.issue_cert("client@example.com")
        both = tmp_path / "both.pem"
        both.write_bytes(issued.private_key_and_cert_chain_pem.bytes())
        client = create_client(endpoint=https_url(server), model_name="m", verify=ca_file, cert=str(both),
                               proxy=proxy.auth_url)
        assert run(client, mode) == "proxied"
        assert proxy.requests() == [f"CONNECT 127.0.0.1:{server.port}"]
    finally:
        server.close()


# -- the decision itself (pure: no sockets) ------------------------------------------------------


def test_no_proxy_matching_like_curl():
    rules = _NoProxy("localhost, .internal.example.com,example.org:8443,10.0.0.0/8,::1,[fd00::1]:443")
    assert rules.bypass("localhost", 80)
    assert rules.bypass("api.internal.example.com", 443) and rules.bypass("internal.example.com", 443)
    assert not rules.bypass("notinternal.example.com", 443)
    assert rules.bypass("example.org", 8443) and not rules.bypass("example.org", 443)
    assert rules.bypass("10.1.2.3", 443) and not rules.bypass("11.1.2.3", 443)
    assert rules.bypass("::1", 443) and rules.bypass("fd00::1", 443) and not rules.bypass("fd00::1", 80)
    assert _NoProxy("*").bypass("anything.example", 1)
    assert not _NoProxy("").bypass("localhost", 80)


def test_environment_precedence(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:3128")
    monkeypatch.setenv("https_proxy", "http://lower:3128")
    assert HTTPOptions().proxy_for("https", "api.example.com", 443).host == "lower"  # lower-case wins
    monkeypatch.setenv("https_proxy", "")
    assert HTTPOptions().proxy_for("https", "api.example.com", 443) is None  # empty lower-case unsets
    monkeypatch.delenv("https_proxy")
    monkeypatch.setenv("HTTP_PROXY", "http://cgi-injected:3128")
    monkeypatch.setenv("REQUEST_METHOD", "GET")  # CGI: HTTP_PROXY may come from a "Proxy:" header
    assert HTTPOptions().proxy_for("http", "api.example.com", 80) is None
    monkeypatch.setenv("ALL_PROXY", "proxy.corp:8080")  # no scheme: http://, as curl
    found = HTTPOptions().proxy_for("http", "api.example.com", 80)
    assert found is not None and found.url == "http://proxy.corp:8080"


def test_decided_once_per_origin_not_per_call(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://u:Pw-123456@proxy.corp:3128")
    options = HTTPOptions()
    monkeypatch.setenv("HTTPS_PROXY", "http://other:1")  # read once, when the client is made
    first = options.proxy_for("https", "api.example.com", 443)
    assert first is options.proxy_for("https", "api.example.com", 443)
    assert first.host == "proxy.corp" and first.auth is not None and "Pw-123456" not in repr(first)
    assert "Pw-123456" in options.secrets()
    monkeypatch.delenv("HTTPS_PROXY")
    assert HTTPOptions().uses_proxy is False  # no proxy: the transports skip the decision entirely


def test_percent_encoded_proxy_credentials():
    options = HTTPOptions(proxy="http://us%40er:p%3Ass%2Fw@proxy:3128")
    found = options.proxy_for("https", "h", 443)
    import base64

    assert found.auth == "Basic " + base64.b64encode(b"us@er:p:ss/w").decode()
    assert "p:ss/w" in options.secrets() and "p%3Ass%2Fw" in options.secrets()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_unusable_environment_proxy_fails_loudly(fault_server, monkeypatch, mode):
    """A SOCKS proxy in the environment is not silently bypassed: the call names the variable."""
    monkeypatch.setenv("ALL_PROXY", "socks5://user:Socks-Secret-9@127.0.0.1:1080")
    client = create_client(endpoint=fault_server.url, model_name="m")
    with pytest.raises(ConfigurationError) as info:
        run(client, mode)
    assert "ALL_PROXY" in str(info.value) and "Socks-Secret-9" not in str(info.value)
    assert fault_server.requests == []
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    fault_server.default = _answer
    assert run(create_client(endpoint=fault_server.url, model_name="m"), mode) == "proxied"
