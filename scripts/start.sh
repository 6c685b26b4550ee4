#!/usr/bin/env bash
# Set up the environment (first run only) and start the dashboard on http://localhost:8501
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh requirements.txt
exec .venv/bin/python -m streamlit run dashboard/app.py "$@"
