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
# `runtime view` (and tests/test_viewer_window.py) need OpenCV's GUI build. It provides the same cv2
# module as opencv-python-headless (required by the runtime and by albumentations), so the two cannot
# sit side by side as separate requirements: lay the GUI wheel of the SAME version over the headless
# one (--no-deps: nothing else moves). Skipped when cv2 already has a GUI.
if ! python -c 'import sys; from runtime.viewer.window import gui_backend; sys.exit(gui_backend() == "NONE")'; then
  python -m pip install -q --force-reinstall --no-deps \
    "opencv-python==$(python -c 'from importlib.metadata import version; print(version("opencv-python-headless"))')"
fi
# The suite needs about 2 GB free under $TMPDIR at its peak (training tests write real checkpoints).
df -h "${TMPDIR:-/tmp}" | tail -1 | awk '{print "free disk under '"${TMPDIR:-/tmp}"': " $4}'
python -m pytest -q -p no:cacheprovider "$@"
# The native runner (README "Native runner"): build cascade-infer, then its ctest checks (parity with the
# Python runtime on real images, error handling). Reached only when pytest passed (set -e).
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2
ctest --test-dir build --output-on-failure
