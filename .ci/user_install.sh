#!/usr/bin/env bash
# Install funnelsim as a user does (`pip install .` into a fresh venv, no extras, the newest
# releases the package allows) and run every command end to end on a segmented synthetic log.
# Each command must exit 0, its JSON must parse with the keys other tools read, and every file
# written must have ordinary permissions (0644 under a 022 umask).
#
#   bash .ci/user_install.sh            (make user-check; make test runs it after the suite)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d /tmp/funnelsim-user.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
umask 022

echo "== user install: fresh venv in $WORK, pip install . (no extras)"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
"$WORK/venv/bin/python" -m pip install --quiet . 2>&1 | { grep -v "^WARNING: Location" || true; }
PY="$WORK/venv/bin/python"
FS="$WORK/venv/bin/funnelsim"
"$PY" -m pip list --format=freeze 2>/dev/null \
    | grep -iE '^(pandas|numpy|scipy|pymc|pytensor|arviz|nutpie|numba|xarray|ibis-framework|duckdb|matplotlib|typer|rich)==' \
    | tr '\n' ' '
echo

cd "$WORK"
FUNNEL=(--stages Prospecting,Qualified,Proposal,Negotiation --won Won --lost Lost --segment-by segment)
FIT=(--draws 150 --tune 150 --chains 2 --seed 1)

run() {   # run NAME ARGS...: the command must exit 0
    local name="$1"; shift
    local start=$SECONDS
    if ! "$FS" "$@" > "$name.out" 2> "$name.err"; then
        echo "FAILED: funnelsim $*"; cat "$name.out" "$name.err"; exit 1
    fi
    echo "ok  funnelsim $name ($((SECONDS - start)) s)"
}

check_json() {   # check_json FILE KEY...: parses, and has these top-level keys
    "$PY" - "$@" <<'EOF'
import json, sys
path, keys = sys.argv[1], sys.argv[2:]
data = json.load(open(path))
missing = [k for k in keys if k not in data]
assert not missing, f"{path}: missing keys {missing}"
EOF
    echo "    $1 parses: ${*:2}"
}

run synth synth crm.csv --deals 1500 --seed 3 --weeks 40
AS_OF="$("$PY" -c 'import json, pandas as pd; print((pd.Timestamp(json.load(open("crm.truth.json"))["as_of"]) - pd.Timedelta(days=60)).date())')"
check_json crm.truth.json as_of cells
run inspect inspect crm.csv --json inspect.json
check_json inspect.json rows deals first_event last_event columns stages suggested
grep -q -- "--stages Prospecting,Qualified,Proposal,Negotiation --won Won --lost Lost --segment-by segment" inspect.out \
    && echo "    inspect suggests the options that read the log"
"$PY" -c 'from funnelsim.data.olist import olist_events' && echo "    funnelsim.data.olist imports (the Olist notebooks need no tests/)"
run funnel funnel crm.csv "${FUNNEL[@]}" --as-of "$AS_OF" --json funnel.json
check_json funnel.json as_of stages notes
run fit fit crm.csv "${FUNNEL[@]}" --as-of "$AS_OF" "${FIT[@]}" --out model
run stages stages model --json stages.json
check_json stages.json stages diagnostics
run forecast forecast crm.csv "${FUNNEL[@]}" --as-of "$AS_OF" --model model --horizon 60 --json forecast.json
check_json forecast.json as_of horizon_days pipeline_revenue deals stages diagnostics
printf '[[scenario]]\nname = "baseline"\n\n[[scenario]]\nname = "proposal+5"\n[[scenario.change]]\nstage = "Proposal"\nconversion_points = 5\n' > scenarios.toml
run whatif whatif crm.csv "${FUNNEL[@]}" --as-of "$AS_OF" --model model --horizon 60 --scenarios scenarios.toml --json whatif.json
check_json whatif.json baseline scenarios
run bottlenecks bottlenecks crm.csv "${FUNNEL[@]}" --as-of "$AS_OF" --model model --horizon 60 --json bottlenecks.json
"$PY" -c 'import json; json.load(open("bottlenecks.json"))' && echo "    bottlenecks.json parses"
COMPARE="$("$PY" -c 'import pandas as pd; print((pd.Timestamp("'"$AS_OF"'") - pd.Timedelta(days=30)).date())')"
run report report crm.csv "${FUNNEL[@]}" --as-of "$AS_OF" --model model --horizon 60 --target 1000000 --compare-to "$COMPARE" --out report.html --json report.json
check_json report.json as_of pipeline_revenue deals stages diagnostics segments
"$PY" -c 'import sys; t = open("report.html", encoding="utf-8").read(); sys.exit(0 if t.lstrip().lower().startswith("<!doctype html") and "<svg" in t and "http" not in t.split("<body", 1)[1].replace("http://www.w3.org", "") else 1)' && echo "    report.html: one self-contained page with its charts"
ORIGINS="$("$PY" -c 'import pandas as pd; a = pd.Timestamp("'"$AS_OF"'"); print(",".join(str((a - pd.Timedelta(days=d)).date()) for d in (60, 30)))')"
run backtest backtest crm.csv "${FUNNEL[@]}" --origins "$ORIGINS" --horizon 30 "${FIT[@]}" --workers 2 --json backtest.json
check_json backtest.json origins summary
run demo demo --out demo --deals 1500 --draws 150 --tune 150 --chains 2
check_json demo/forecast.json as_of pipeline_revenue deals stages diagnostics
check_json demo/funnel.json as_of stages

# every file a command wrote: ordinary permissions, no temp file left behind
bad="$(find . -path ./venv -prune -o -type f ! -perm 0644 -print)"
if [ -n "$bad" ]; then echo "FAILED: files without 0644 permissions:"; ls -l $bad; exit 1; fi
leftover="$(find . -path ./venv -prune -o -name '*.tmp*' -print)"
if [ -n "$leftover" ]; then echo "FAILED: temp files left: $leftover"; exit 1; fi
echo "== user install: every command ran; all outputs 0644"
