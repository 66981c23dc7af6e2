# Shared set-up for scripts/demo.sh and scripts/test.sh: InfluxDB 1.x from Debian's packages
# and a ./.venv with the pinned requirements. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_debian_packages() {
    local missing=()
    command -v influxd >/dev/null || missing+=(influxdb)
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    [ ${#missing[@]} -eq 0 ] && return
    echo "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ensure_venv REQUIREMENTS [VENV]: VENV (default .venv) holds exactly the pinned requirements. The stamp
# covers requirements.txt, REQUIREMENTS and the files it includes with -r (one level deep).
ensure_venv() {
    local requirements="$1" venv="${2:-.venv}"
    local stamp="$venv/.installed" want included
    included="$(sed -n 's/^-r[[:space:]]*//p' "$requirements" | grep -vx requirements.txt || true)"
    # shellcheck disable=SC2086  # one file name per line, none with spaces
    want="$(cat requirements.txt "$requirements" $included | sha256sum | cut -c1-16)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "Python 3.11 or newer is needed, found $(python3 --version)" >&2; exit 1; }
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    echo "installing Python packages into ./$venv (first run: a few minutes)"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -r "$requirements"
    echo "$want" > "$stamp"
}
