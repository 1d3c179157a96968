#!/usr/bin/env bash
# Run the whole test suite (sets up .venv, packages and Graphviz first; idempotent).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/setup.sh"
cd "$root"
# TODO: enable
# bash "$root/tools/lint.sh"  # ruff and mypy: mypy passes once fxgrow/analysis is typed
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile "$@"
