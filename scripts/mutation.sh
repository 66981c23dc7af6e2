#!/usr/bin/env bash
# Mutation testing of the decision code: mutmut, configured in pyproject.toml ([tool.mutmut]), run over the
# fast unit-test selection, from scratch, in its own ./.venv-mut; then the summary and the surviving mutants.
# 3 to 12 minutes on 2 shared cores; docs/mutation.md has the last figures and why each survivor is left.
#
#   bash scripts/mutation.sh                      every mutant; exit 1 when the kill rate is below 90%
#   bash scripts/mutation.sh 'anomaly.runs.*'     only the mutants whose names match (the rate then means little)
#   MIN_KILL_RATE=0 bash scripts/mutation.sh      report only
source "$(dirname "$0")/lib.sh"
ensure_debian_packages
ensure_venv requirements-mutation.txt .venv-mut

min_rate="${MIN_KILL_RATE:-90}"
children="$(nproc)"
# Results of an earlier run may belong to other code or tests: start clean so the figures are this tree's.
rm -rf mutants
mkdir mutants
started=$SECONDS
# mutmut prints a progress line per mutant; the log keeps it out of the way.
if ! .venv-mut/bin/mutmut run --max-children "$children" "$@" >mutants/run.log 2>&1; then
    tail -n 40 mutants/run.log >&2
    echo "mutmut run failed; the whole output is in mutants/run.log" >&2
    exit 1
fi
elapsed=$((SECONDS - started))
.venv-mut/bin/mutmut export-cicd-stats >/dev/null

echo "surviving and untested mutants (mutmut show NAME for the diff):"
.venv-mut/bin/mutmut results | sed 's/^/  /'
.venv-mut/bin/python - "$elapsed" "$children" "$min_rate" <<'EOF'
import json
import sys

elapsed, children, min_rate = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
with open("mutants/mutmut-cicd-stats.json", encoding="utf-8") as f:
    s = json.load(f)
# A mutant that makes the tests hang (timeout) is caught as surely as one that makes them fail.
caught = s["killed"] + s["timeout"]
rate = 100 * caught / s["total"] if s["total"] else 0.0
print(
    f"mutants: {s['total']}  killed: {s['killed']}  timeout: {s['timeout']}  survived: {s['survived']}  "
    f"no tests: {s['no_tests']}  suspicious: {s['suspicious']}  segfault: {s['segfault']}  "
    f"skipped: {s['skipped']}"
)
print(f"kill rate (killed + timeout) / total: {rate:.1f}%  in {elapsed // 60}m{elapsed % 60:02d}s on {children} cores")
if rate < min_rate:
    print(f"below the required {min_rate:g}%", file=sys.stderr)
    sys.exit(1)
EOF
