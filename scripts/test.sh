#!/usr/bin/env bash
# The README's test command: install everything into .venv and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch / torchvision are pinned for CI in constraints.txt (they install from this machine's disk).
python -m pip install -q -c constraints.txt -e '.[dev]'
python -m pytest -q -p no:cacheprovider "$@"
