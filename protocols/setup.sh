#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv with the pinned stack.
# torch==2.9.0 comes from the default index (its CUDA 12.8 build, ~3.5 GB, which runs on CPU too):
# openmmtorch 1.5 links exactly that torch's libtorch_cuda / libnvrtc, so no other torch works.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -c "import multiscale, multiscale.openmm.bridge as b; b._import_openmmtorch(); print('multiscale environment ready:', multiscale.__version__)"
