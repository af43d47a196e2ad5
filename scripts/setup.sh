#!/usr/bin/env bash
# One-step set-up: a virtualenv in .venv with steprl (editable) and its dev extras.
#   STEPRL_TORCH   torch requirement (default torch==2.13.0; on a CUDA machine with torch already in the
#                  environment you prefer, run `pip install -e ".[dev]"` there instead)
#   PYTHON         interpreter that creates the venv (default python3, >= 3.10)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --disable-pip-version-check -q "${STEPRL_TORCH:-torch==2.13.0}" -e ".[dev]"
.venv/bin/python -c "import steprl, torch, lightning, hydra, transformers, mlflow; print('steprl', steprl.__version__, '| torch', torch.__version__)"
