#!/usr/bin/env bash
# The main job: the fxgrow demo (sets up .venv, packages and Graphviz first; idempotent).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/setup.sh"
cd "$root"
# the demo is an example beside the library: tools/fxgrow_demo (python -m fxgrow_demo --help)
PYTHONPATH="$root/tools${PYTHONPATH:+:$PYTHONPATH}" exec .venv/bin/python -m fxgrow_demo "$@"
