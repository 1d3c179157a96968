#!/usr/bin/env bash
# Run the whole test suite (sets up .venv, packages and Graphviz first; idempotent).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/setup.sh"
cd "$root"
bash "$root/tools/lint.sh"  # ruff lint, ruff format --check, mypy on the package
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile "$@"
