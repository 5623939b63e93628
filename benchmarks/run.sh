#!/usr/bin/env bash
# One command: set up (nginx, venvs) and run every benchmark; see README.md. Options go to run.py.
set -euo pipefail
exec python3 "$(dirname "$0")/run.py" "$@"
