#!/usr/bin/env bash
# Lint, format and type checks over the whole tree (CI runs them before the tests).
source "$(dirname "$0")/lib.sh"
ensure_debian_packages
ensure_venv requirements-dev.txt
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
