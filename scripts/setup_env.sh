#!/usr/bin/env bash
# Create .venv (if needed) and install the pinned requirements. Usage: setup_env.sh REQUIREMENTS_FILE
#
# MEDMODELS_TORCH_INDEX=URL installs torch and torchvision (at the versions pinned in
# requirements.txt) from that wheel index first. The CPU-only index,
#   MEDMODELS_TORCH_INDEX=https://download.pytorch.org/whl/cpu bash scripts/start.sh
# leaves out the CUDA libraries that PyPI's Linux torch wheel pulls in (see README, "Set-up size").
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: Python 3.11 or newer is needed; $python is $("$python" -V 2>&1). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
torch_index="${MEDMODELS_TORCH_INDEX:-}"
"$python" -m venv .venv
stamp=".venv/.installed-$( { sha256sum "$req" requirements.txt; [ -z "$torch_index" ] || echo "$torch_index"; } \
  | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  if [ -n "$torch_index" ]; then
    pins=$(grep -E '^(torch|torchvision)==' requirements.txt | tr '\n' ' ')
    echo "installing ${pins}from $torch_index" >&2
    # torch==X in requirements.txt is then satisfied by the index's X+cpu build.
    # shellcheck disable=SC2086
    .venv/bin/python -m pip install --quiet --index-url "$torch_index" $pins
  fi
  .venv/bin/python -m pip install --quiet -r "$req"
  touch "$stamp"
fi
