#!/usr/bin/env bash
# Sets up a virtual environment with the app's requirements.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt
