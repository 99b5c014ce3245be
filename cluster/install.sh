#!/usr/bin/env bash
# Installs tvae-sweep, with the pinned versions of constraints.txt, into a virtualenv on a Linux node.
# The `ray up` configs run it as a setup command; it works on any node with network access:
#
#   bash cluster/install.sh [REPO] [VENV] [EXTRA==VERSION ...]   # defaults: this checkout, ~/tvae-venv
#
# EXTRA packages (pinned by the caller) go into the same virtualenv, e.g. the cloud SDK that the
# head's autoscaler needs.
# It uses uv (installed if missing) to get Python 3.11, the version constraints.txt was resolved with.
# On Linux x86_64, PyPI's torch wheel is the CUDA build: nothing else is needed for the GPUs.
set -euo pipefail

REPO=$(cd "${1:-$(dirname "$0")/..}" && pwd)
VENV=${2:-$HOME/tvae-venv}
EXTRA=("${@:3}")
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
UV_VERSION=0.13.8

export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null 2>&1; then
    curl -LsSf "https://astral.sh/uv/$UV_VERSION/install.sh" | sh
fi

uv venv --allow-existing --python "$PYTHON_VERSION" "$VENV"
uv pip install --python "$VENV/bin/python" --constraint "$REPO/constraints.txt" --editable "$REPO" ${EXTRA[@]+"${EXTRA[@]}"}
"$VENV/bin/python" -c "import ray, torch, tvae_sweep; print('tvae-sweep installed: ray', ray.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda)"
