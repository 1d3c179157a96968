#!/usr/bin/env bash
# Static checks: ruff lint, ruff format (check only) and mypy (configured in pyproject.toml).
# ruff and mypy come pinned with the dev extras that tools/setup.sh installs into .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/setup.sh"
cd "$root"
.venv/bin/ruff check fxgrow tests tools
.venv/bin/ruff format --check fxgrow tests tools
.venv/bin/mypy
