#!/usr/bin/env bash
# The main job: the fxgrow demo (sets up .venv, packages and Graphviz first; idempotent).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/setup.sh"
cd "$root"
exec .venv/bin/fxgrow demo "$@"
