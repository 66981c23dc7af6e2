#!/usr/bin/env bash
# Run the test suite against a real, throwaway InfluxDB (installed from Debian's packages if missing).
source "$(dirname "$0")/lib.sh"
ensure_debian_packages
ensure_venv requirements-dev.txt
exec .venv/bin/python -m pytest -q "$@"
