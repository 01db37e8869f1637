#!/usr/bin/env bash
# Switch a Python environment to the GPU runtime of mammo-cascade.
#
#   bash scripts/install-gpu.sh          onnxruntime-gpu + cuda-python + TensorRT 10 (datacenter 'tensorrt-cu12')
#   bash scripts/install-gpu.sh --rtx    onnxruntime-gpu + cuda-python + TensorRT for RTX ('tensorrt-rtx-cu13')
#
# Why a script and not 'pip install mammo-cascade[gpu]': the base install depends on the CPU
# package 'onnxruntime', and 'onnxruntime-gpu' provides the same Python module. The two must
# never be installed together (the second overwrites the first's files; uninstalling either
# then breaks the other). This script removes both, installs the GPU packages listed in the
# [gpu] / [gpu-rtx] extra of pyproject.toml, then the project and its other dependencies
# WITHOUT the CPU onnxruntime. Run it inside the virtual environment to change (PYTHON=...
# picks the interpreter). Undo: pip uninstall -y onnxruntime-gpu && pip install -e .
#
# Sizes and sources (as of writing): onnxruntime-gpu ~255 MB from PyPI; 'tensorrt-cu12' is a
# small package whose libraries pip fetches from pypi.nvidia.com at install time (that index
# must be reachable); 'tensorrt-rtx-cu13-libs' is a self-contained ~95 MB wheel on PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
EXTRA=gpu
for arg in "$@"; do
  case "$arg" in
    --rtx) EXTRA=gpu-rtx ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (use --rtx or --help)" >&2; exit 2 ;;
  esac
done

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "warning: nvidia-smi not found (no NVIDIA driver?): the packages install, but nothing will run on a GPU" >&2
fi

# The dependency lists come from pyproject.toml: the base dependencies minus 'onnxruntime', and the extra.
mapfile -t BASE < <("$PY" - <<'EOF'
import re
try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for d in deps:
    if re.split(r"[ <>=!~;\[]", d, 1)[0].strip().lower() != "onnxruntime":
        print(d)
EOF
)
mapfile -t GPU < <(EXTRA="$EXTRA" "$PY" - <<'EOF'
import os
try:
    import tomllib
except ImportError:
    from pip._vendor import tomli as tomllib
for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"][os.environ["EXTRA"]]:
    print(d)
EOF
)

echo "removing onnxruntime / onnxruntime-gpu (a clean slate: they share files)"
"$PY" -m pip uninstall -y onnxruntime onnxruntime-gpu >/dev/null 2>&1 || true
echo "installing [$EXTRA]: ${GPU[*]}"
"$PY" -m pip install "${GPU[@]}"
echo "installing the project and its other dependencies (without the CPU onnxruntime)"
"$PY" -m pip install "${BASE[@]}"
"$PY" -m pip install --no-deps -e .

"$PY" - <<'EOF'
import importlib.metadata as md
names = {(d.metadata["Name"] or "").lower() for d in md.distributions()}
if "onnxruntime" in names:
    raise SystemExit("error: the CPU 'onnxruntime' is installed next to onnxruntime-gpu; run "
                     "'pip uninstall -y onnxruntime onnxruntime-gpu' and this script again")
import onnxruntime
print("onnxruntime", onnxruntime.__version__, "providers in this build:", onnxruntime.get_available_providers())
EOF
echo "note: 'pip check' will report that mammo-cascade wants 'onnxruntime'; onnxruntime-gpu provides it."
"$PY" -m runtime info
