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
# Optional: bubblewrap, which gives the code sandbox (task=code) its network / file-system isolation. Never fails
# the set-up (no apt, no root, no network: the sandbox then runs without it). STEPRL_NO_APT=1 skips it.
if [ -z "${STEPRL_NO_APT:-}" ] && ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="skip"; fi
    fi
    if [ "$SUDO" != skip ]; then
        timeout 300 $SUDO apt-get install -y -q bubblewrap >/dev/null 2>&1 \
            || { timeout 300 $SUDO apt-get update -q >/dev/null 2>&1 && timeout 300 $SUDO apt-get install -y -q bubblewrap >/dev/null 2>&1; } \
            || echo "setup: bubblewrap not installed (optional; the code sandbox falls back to plain processes)"
    fi
fi
.venv/bin/python -c "import steprl, torch, lightning, hydra, transformers, mlflow; print('steprl', steprl.__version__, '| torch', torch.__version__)"
