#!/usr/bin/env bash
# Idempotent set-up: Graphviz's `dot`, a virtual environment in .venv, fxgrow installed editable
# with its test extras. Re-running does nothing once everything is in place.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v dot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing Graphviz (dot) with apt-get" >&2
        (apt-get install -y -qq graphviz >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq graphviz >/dev/null; }) ||
            echo "[setup] could not install graphviz; DOT text output still works" >&2
    else
        echo "[setup] no 'dot' binary and not root: install Graphviz to render SVG/PNG (DOT text output works without it)" >&2
    fi
fi

# Debian's Chromium and its driver: the browser tests of the interactive HTML view
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing Chromium and chromium-driver with apt-get" >&2
        (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null; }) ||
            echo "[setup] could not install chromium; the browser tests will be skipped" >&2
    else
        echo "[setup] no chromium/chromedriver and not root: the browser tests will be skipped" >&2
    fi
fi

py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv" >&2
    "$py" -m venv .venv
fi
stamp=.venv/.fxgrow-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import fxgrow" 2>/dev/null; then
    echo "[setup] installing fxgrow and its dependencies into .venv (first run: a few minutes)" >&2
    log=.venv/install.log
    if ! .venv/bin/python -m pip install -e ".[dev]" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "[setup] pip install failed; full log in $log" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
