#!/usr/bin/env bash
# Benchmarks the release `freeroute` against `curl` sending the same request to a local
# fake OpenRouter (examples/fake_openrouter.rs) with no artificial delay.
#
#   bench/run.sh            # builds, measures, prints a table, writes bench/results.md
#
# Targets, checked at the end (exit status 1 when one is missed, after the report is
# written): (1) freeroute/curl <= 1.0; (2) <= 1.2; (3) less than 5 ms over (1); (4b) the
# hedged run less than 5 ms over (1) + the 200 ms hedge delay; peak RSS under 12 MB.
#
# Knobs (environment): RUNS_SHORT (100), RUNS_LONG (50), RUNS_FAILOVER (50), RUNS_HANG (5),
# RUNS_HEDGE (20), RUNS_RSS (5), BENCH_NO_INSTALL=1 (never apt-get install hyperfine or time).
#
# Nothing leaves 127.0.0.1: the script re-runs itself in a sealed environment (no proxy or
# provider variables from the caller), points OpenRouter's base_url at the fake server, and
# sets FREEROUTE_DISCOVER=0 FREEROUTE_KEYLESS=0. The fake server is stopped on exit, and
# also stops by itself when this script's end of its stdin pipe closes or after a limit.
set -euo pipefail

# ---- a sealed environment: only what cargo and the knobs need --------------------------
if [[ -z ${_FREEROUTE_BENCH_SEALED:-} ]]; then
    keep=(PATH="$PATH" HOME="$HOME" TERM="${TERM:-dumb}")
    for v in CARGO_HOME RUSTUP_HOME RUSTUP_TOOLCHAIN CARGO_TARGET_DIR \
        RUNS_SHORT RUNS_LONG RUNS_FAILOVER RUNS_HANG RUNS_HEDGE RUNS_RSS BENCH_NO_INSTALL; do
        if [[ -n ${!v:-} ]]; then keep+=("$v=${!v}"); fi
    done
    exec env -i _FREEROUTE_BENCH_SEALED=1 "${keep[@]}" bash "$0" "$@"
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS_SHORT=${RUNS_SHORT:-100}
RUNS_LONG=${RUNS_LONG:-50}
RUNS_FAILOVER=${RUNS_FAILOVER:-50}
RUNS_HANG=${RUNS_HANG:-5}
RUNS_HEDGE=${RUNS_HEDGE:-20}
HEDGE_MS=200
RSS_LIMIT_BYTES=12000000
RUNS_RSS=${RUNS_RSS:-5}
SERVER_LIMIT_SECS=1800
KEY=sk-or-v1-bench-0123456789abcdef0123456789abcdef

log() { printf '%s\n' "$*" >&2; }
die() {
    log "bench: $*"
    exit 1
}

# ---- tools ----------------------------------------------------------------------------
can_install() {
    [[ -z ${BENCH_NO_INSTALL:-} ]] && command -v apt-get > /dev/null && [[ $(id -u) == 0 ]]
}
if ! command -v hyperfine > /dev/null && can_install; then
    log "bench: installing hyperfine (apt-get)"
    apt-get install -y -qq hyperfine > /dev/null 2>&1 || log "bench: could not install hyperfine; using a shell loop"
fi
if [[ ! -x /usr/bin/time ]] && can_install; then
    log "bench: installing time (apt-get)"
    apt-get install -y -qq time > /dev/null 2>&1 || log "bench: could not install time; no RSS figures"
fi
command -v curl > /dev/null || die "curl is needed"
HAVE_HYPERFINE=0
if command -v hyperfine > /dev/null; then HAVE_HYPERFINE=1; fi
HAVE_TIME=0
if [[ -x /usr/bin/time ]]; then HAVE_TIME=1; fi

# ---- build (before HOME changes: cargo and rustup live there) ---------------------------
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
build_release bench fake_openrouter

# ---- temp dirs, fake server, cleanup -------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/freeroute-bench.XXXXXX")
FAKE_PID=
CTL_FD=
HF_PID=
cleanup() {
    local rc=$?
    if [[ -n $HF_PID ]]; then kill "$HF_PID" 2> /dev/null || true; fi
    if [[ -n $CTL_FD ]]; then exec {CTL_FD}>&-; fi
    if [[ -n $FAKE_PID ]] && kill -0 "$FAKE_PID" 2> /dev/null; then
        kill "$FAKE_PID" 2> /dev/null || true
        wait "$FAKE_PID" 2> /dev/null || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The server's stdin is a FIFO held open by this script only (commands run with it
# closed): if the script dies, even by SIGKILL, the server sees EOF and exits.
mkfifo "$TMP/ctl"
"$FAKE" 0 "$SERVER_LIMIT_SECS" < "$TMP/ctl" > "$TMP/port" 2> "$TMP/fake.err" &
FAKE_PID=$!
exec {CTL_FD}> "$TMP/ctl"
PORT=
for _ in $(seq 100); do
    PORT=$(head -n1 "$TMP/port" 2> /dev/null || true)
    [[ -n $PORT ]] && break
    kill -0 "$FAKE_PID" 2> /dev/null || die "the fake server exited: $(cat "$TMP/fake.err")"
    sleep 0.05
done
[[ $PORT =~ ^[0-9]+$ ]] || die "the fake server printed no port"
BASE=http://127.0.0.1:$PORT/api/v1
log "bench: fake server on 127.0.0.1:$PORT (pid $FAKE_PID)"

# A sealed home for freeroute.
export HOME=$TMP/home
export XDG_CONFIG_HOME=$TMP/config XDG_CACHE_HOME=$TMP/cache XDG_STATE_HOME=$TMP/state XDG_DATA_HOME=$TMP/data
export OPENROUTER_API_KEY=$KEY
export FREEROUTE_DISCOVER=0 FREEROUTE_KEYLESS=0 NO_COLOR=1
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
mkdir -p "$HOME" "$XDG_CONFIG_HOME/freeroute" "$XDG_CACHE_HOME" "$XDG_STATE_HOME" "$XDG_DATA_HOME"
printf '[providers.openrouter]\nbase_url = "%s"\n' "$BASE" > "$XDG_CONFIG_HOME/freeroute/config.toml"
STATE_DIR=$XDG_STATE_HOME/freeroute

# The bodies curl sends: what freeroute sends (wire/openai.rs ChatRequest).
for m in short long; do
    printf '{"model":"bench/%s:free","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}' \
        "$m" > "$TMP/$m.json"
done

# Commands, as arrays; hyperfine -N (no shell) gets them quoted by `printf %q`.
FR_SHORT=("$FR" -q -m bench/short:free hi)
FR_LONG=("$FR" -q -m bench/long:free hi)
FR_FAILOVER=("$FR" -q -m bench/busy-1:free -m bench/busy-2:free -m bench/busy-3:free -m bench/short:free hi)
FR_HANG=("$FR" -q --timeout 4 -m bench/hang:free -m bench/short:free hi)
FR_HEDGE=("$FR" -q --timeout 4 --hedge-after "$HEDGE_MS" -m bench/hang:free -m bench/short:free hi)
CURL=(curl -sN --noproxy '*' -H "Authorization: Bearer $KEY" -H "Content-Type: application/json"
    -H "Accept: text/event-stream" "$BASE/chat/completions" --data-binary)
CURL_SHORT=("${CURL[@]}" "@$TMP/short.json")
CURL_LONG=("${CURL[@]}" "@$TMP/long.json")

# run NAME: runs the command in array NAME.
run() {
    local -n _cmd=$1
    "${_cmd[@]}" {CTL_FD}>&-
}
# quoted NAME: the command in array NAME as one shell-quoted string.
quoted() {
    local -n _cmd=$1
    local s
    printf -v s '%q ' "${_cmd[@]}"
    echo "${s% }"
}

# ---- sanity: every case does what it should, and the catalog cache is warm ------------
check() { # check WHAT WANT NAME: the command in array NAME succeeds and prints WANT
    local what=$1 want=$2 out
    out=$(run "$3" < /dev/null) || die "$what failed: $(quoted "$3")"
    [[ $out == *"$want"* ]] || die "$what: output lacks '$want': ${out:0:300}"
}
check "warm-up (fills the catalog cache)" "The quick brown fox" FR_SHORT
[[ -n $(ls -A "$XDG_CACHE_HOME/freeroute" 2> /dev/null) ]] || die "no catalog cache was written"
check "curl, 20 tokens" "data: [DONE]" CURL_SHORT
check "freeroute, 2,000 tokens" "steady" FR_LONG
check "curl, 2,000 tokens" "data: [DONE]" CURL_LONG
# The attempts, as `--json` reports them: each case fails over the way it should.
outcomes() { # outcomes NAME: "outcome outcome ..." of the command in array NAME, with --json
    local -n _c=$1
    local -a j=("${_c[@]:0:${#_c[@]}-1}" --json "${_c[-1]}")
    run j < /dev/null | grep -o '"outcome":"[a-z_]*"' | cut -d'"' -f4 | tr '\n' ' ' | sed 's/ $//'
}
rm -rf "$STATE_DIR"
got=$(outcomes FR_FAILOVER)
[[ $got == "rate_limited rate_limited rate_limited ok" ]] || die "fail-over case: attempts were '$got'"
rm -rf "$STATE_DIR"
got=$(outcomes FR_HANG)
[[ $got == "timeout ok" ]] || die "hang case: attempts were '$got'"
rm -rf "$STATE_DIR"
got=$(outcomes FR_HEDGE)
[[ $got == "cancelled ok" ]] || die "hedged hang case: attempts were '$got'"
rm -rf "$STATE_DIR"
SHORT_BYTES=$(run FR_SHORT < /dev/null | wc -c)
LONG_BYTES=$(run FR_LONG < /dev/null | wc -c)

# freeroute remembers every request in its state dir, and counts them against OpenRouter's
# 20 requests a minute: run after run, the benchmark would soon be refused. So every timed
# run starts from a known state dir: for (1), (2) and (5) the state left by one earlier
# answer ("warm": a realistic file to read and rewrite), for (3) and (4) none at all
# ("fresh": no remembered failure makes freeroute skip a busy or hung model).
rm -rf "$STATE_DIR"
run FR_SHORT < /dev/null > /dev/null
cp -a "$STATE_DIR" "$TMP/state-warm"
printf '#!/bin/sh\nrm -rf "%s" && exec cp -a "%s" "%s"\n' "$STATE_DIR" "$TMP/state-warm" "$STATE_DIR" > "$TMP/reset-state"
chmod +x "$TMP/reset-state"
PREPARE_WARM=("$TMP/reset-state")
PREPARE_FRESH=(rm -rf "$STATE_DIR")

# ---- timing ---------------------------------------------------------------------------
now_us() {
    if [[ -n ${EPOCHREALTIME:-} ]]; then
        echo "${EPOCHREALTIME/[.,]/}"
    else
        echo $(($(date +%s%N) / 1000))
    fi
}

median_of() { # reads numbers, prints the median
    sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

# measure RUNS WARMUP PREPARE NAME...: prints the median in ms of each command (arrays
# NAME...), one per line. PREPARE names a command array run before each run, or is "".
measure() {
    local runs=$1 warmup=$2 prepare=$3 name i t0 t1
    shift 3
    if ((HAVE_HYPERFINE)); then
        local -a hf=(hyperfine -N --style none --runs "$runs" --warmup "$warmup" --export-json "$TMP/hf.json")
        if [[ -n $prepare ]]; then hf+=(--prepare "$(quoted "$prepare")"); fi
        for name in "$@"; do hf+=("$(quoted "$name")"); done
        # In the background with `wait`, so that a TERM or INT reaches the trap at once.
        "${hf[@]}" > "$TMP/hf.out" 2>&1 {CTL_FD}>&- &
        HF_PID=$!
        if ! wait "$HF_PID"; then
            cat "$TMP/hf.out" >&2
            die "hyperfine failed"
        fi
        HF_PID=
        # One median (seconds) per command, in order.
        awk '/"median":/ {gsub(/[^0-9.eE+-]/, "", $2); printf "%.3f\n", $2 * 1000}' "$TMP/hf.json"
    else
        for name in "$@"; do
            for ((i = 0; i < warmup; i++)); do
                if [[ -n $prepare ]]; then run "$prepare"; fi
                run "$name" < /dev/null > /dev/null
            done
            : > "$TMP/times"
            for ((i = 0; i < runs; i++)); do
                if [[ -n $prepare ]]; then run "$prepare"; fi
                t0=$(now_us)
                run "$name" < /dev/null > /dev/null
                t1=$(now_us)
                echo $((t1 - t0)) >> "$TMP/times"
            done
            median_of < "$TMP/times" | awk '{printf "%.3f\n", $1 / 1000}'
        done
    fi
}

# peak_rss NAME: median over RUNS_RSS runs of the command's peak RSS, in KiB.
peak_rss() {
    local -n _cmd=$1
    local i
    : > "$TMP/rss"
    for ((i = 0; i < RUNS_RSS; i++)); do
        run PREPARE_WARM
        /usr/bin/time -f %M -o "$TMP/rss1" "${_cmd[@]}" < /dev/null > /dev/null {CTL_FD}>&-
        tail -n1 "$TMP/rss1" >> "$TMP/rss"
    done
    median_of < "$TMP/rss"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else print "-"}'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.2f", a - b}'; }
fmt() { awk -v a="$1" 'BEGIN {printf "%.1f", a}'; }

if ((HAVE_HYPERFINE)); then TIMER=$(hyperfine --version); else TIMER='bash loop ($EPOCHREALTIME)'; fi
log "bench: timing with $TIMER"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2> /dev/null || echo "?")
log "bench: (1) 20-token answer, $RUNS_SHORT runs each"
measure "$RUNS_SHORT" 5 PREPARE_WARM FR_SHORT CURL_SHORT > "$TMP/m"
mapfile -t r < "$TMP/m"
FR1=${r[0]} CU1=${r[1]}

log "bench: (2) 2,000-token stream, $RUNS_LONG runs each"
measure "$RUNS_LONG" 3 PREPARE_WARM FR_LONG CURL_LONG > "$TMP/m"
mapfile -t r < "$TMP/m"
FR2=${r[0]} CU2=${r[1]}

# (3): each run starts without remembered failures, or the busy models would be skipped;
# the 20-token case is timed again under the same condition as a second baseline.
log "bench: (3) fail-over past three 429s, $RUNS_FAILOVER runs each"
measure "$RUNS_FAILOVER" 3 PREPARE_FRESH FR_FAILOVER FR_SHORT > "$TMP/m"
mapfile -t r < "$TMP/m"
FR3=${r[0]} FR3BASE=${r[1]}

log "bench: (4) hung candidate then a good one (--timeout 4), $RUNS_HANG runs"
measure "$RUNS_HANG" 0 PREPARE_FRESH FR_HANG > "$TMP/m"
mapfile -t r < "$TMP/m"
FR4=${r[0]}

# (4b): the same with a hedge: the good candidate starts beside the hung one after 200 ms.
log "bench: (4b) hung candidate then a good one, --hedge-after $HEDGE_MS, $RUNS_HEDGE runs"
measure "$RUNS_HEDGE" 2 PREPARE_FRESH FR_HEDGE > "$TMP/m"
mapfile -t r < "$TMP/m"
FR4H=${r[0]}

RSS_FR1=- RSS_CU1=- RSS_FR2=- RSS_CU2=- RSS_FR4H=-
if ((HAVE_TIME)); then
    log "bench: (5) peak RSS, median of $RUNS_RSS runs"
    RSS_FR1=$(peak_rss FR_SHORT)
    RSS_CU1=$(peak_rss CURL_SHORT)
    RSS_FR2=$(peak_rss FR_LONG)
    RSS_CU2=$(peak_rss CURL_LONG)
    RSS_FR4H=$(peak_rss FR_HEDGE)
fi
mib() { if [[ $1 == - ]]; then echo -; else awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; fi; }
rss_ratio() { if [[ $1 == - ]]; then echo -; else ratio "$1" "$2"; fi; }

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2> /dev/null || echo "?")

# ---- report ---------------------------------------------------------------------------
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2> /dev/null || true)
CPU=${CPU:-unknown}
NPROC=$(nproc 2> /dev/null || echo "?")
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
D3=$(minus "$FR3" "$FR1")
D3SAME=$(minus "$FR3" "$FR3BASE")
D4=$(minus "$FR4" "$FR1")
D4H=$(minus "$FR4H" "$FR1")
X4H=$(awk -v a="$FR4H" -v b="$FR1" -v h="$HEDGE_MS" 'BEGIN {printf "%+.2f", a - b - h}')

# ---- targets --------------------------------------------------------------------------
RSS_MAX=-
if ((HAVE_TIME)); then
    RSS_MAX=$(printf '%s\n' "$RSS_FR1" "$RSS_FR2" "$RSS_FR4H" | sort -n | tail -n1)
fi
# target NAME MEASURED GOAL OK: one row of the targets table.
TARGETS=()
MISSED=0
target() {
    local verdict=met
    if [[ $4 != 1 ]]; then
        verdict="**missed**"
        MISSED=$((MISSED + 1))
    fi
    TARGETS+=("$1|$2|$3|$verdict")
}
le() { awk -v a="$1" -v b="$2" 'BEGIN {print (a <= b) ? 1 : 0}'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN {print (a < b) ? 1 : 0}'; }
target "(1) 20-token answer vs curl" "$(ratio "$FR1" "$CU1")" "<= 1.00x" "$(le "$(awk -v a="$FR1" -v b="$CU1" 'BEGIN {print a / b}')" 1.0)"
target "(2) 2,000-token stream vs curl" "$(ratio "$FR2" "$CU2")" "<= 1.20x" "$(le "$(awk -v a="$FR2" -v b="$CU2" 'BEGIN {print a / b}')" 1.2)"
target "(3) fail-over cost over (1)" "$D3 ms" "< 5 ms" "$(lt "$D3" 5)"
target "(4b) hedged hang over (1) + ${HEDGE_MS} ms" "$X4H ms" "< 5 ms" "$(lt "$X4H" 5)"
if [[ $RSS_MAX != - ]]; then
    target "peak RSS, largest of (5)" "$(mib "$RSS_MAX") ($((RSS_MAX * 1024)) bytes)" "< 12 MB (12,000,000 bytes)" "$(lt $((RSS_MAX * 1024)) "$RSS_LIMIT_BYTES")"
else
    target "peak RSS" "not measured (no /usr/bin/time)" "< 12 MB" 0
fi

ROWS=(
    "(1) 20-token answer|$(fmt "$FR1")|$(fmt "$CU1")|$(ratio "$FR1" "$CU1")"
    "(2) 2,000-token stream|$(fmt "$FR2")|$(fmt "$CU2")|$(ratio "$FR2" "$CU2")"
    "(3) fail-over: 3x429, then answer|$(fmt "$FR3")|-|$D3 ms vs (1)"
    "(4) hung candidate, then answer|$(fmt "$FR4")|-|$D4 ms vs (1)"
    "(4b) the same, --hedge-after $HEDGE_MS|$(fmt "$FR4H")|-|$D4H ms vs (1)"
    "(5) peak RSS, 20-token|$(mib "$RSS_FR1")|$(mib "$RSS_CU1")|$(rss_ratio "$RSS_FR1" "$RSS_CU1")"
    "(5) peak RSS, 2,000-token|$(mib "$RSS_FR2")|$(mib "$RSS_CU2")|$(rss_ratio "$RSS_FR2" "$RSS_CU2")"
    "(5) peak RSS, (4b) hedged|$(mib "$RSS_FR4H")|-|-"
)

{
    printf '\n%-36s %14s %12s %18s\n' "case" "freeroute ms" "curl ms" "ratio"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r a b c d <<< "$row"
        printf '%-36s %14s %12s %18s\n' "$a" "$b" "$c" "$d"
    done
    printf '\n(3) fail-over cost: %s ms over (1); %s ms over the 20-token run timed alongside it (%s ms), both with a fresh state dir.\n' \
        "$D3" "$D3SAME" "$(fmt "$FR3BASE")"
    printf '(4) without hedging: the hung attempt waits out half of --timeout 4 before the next candidate.\n'
    printf '(4b) with --hedge-after %s: %s ms over (1) + %s ms.\n' "$HEDGE_MS" "$X4H" "$HEDGE_MS"
    printf '\n%-40s %26s %28s %10s\n' "target" "measured" "goal" "verdict"
    for row in "${TARGETS[@]}"; do
        IFS='|' read -r a b c d <<< "$row"
        printf '%-40s %26s %28s %10s\n' "$a" "$b" "$c" "${d//\*/}"
    done
    printf 'Medians; timer: %s. Output: %s bytes (20-token), %s bytes (2,000-token).\n' "$TIMER" "$SHORT_BYTES" "$LONG_BYTES"
}

# The sections other benchmarks wrote after this one's (bench/link.py's, …) are kept.
KEPT=$(awk 'NR > 1 && /^##? / { keep = 1 } keep' "$ROOT/bench/results.md" 2> /dev/null || true)
{
    echo "# freeroute vs curl, local fake OpenRouter"
    echo
    echo "Generated by \`bench/run.sh\` on $DATE."
    echo
    echo "- Machine: $NPROC CPUs, $CPU; $(uname -sr)"
    echo "- Load average (1, 5, 15 min) before the timed runs: $LOAD_BEFORE; after: $LOAD_AFTER (other work on the machine skews the numbers)"
    echo "- freeroute: release build of $REV; $RUSTC"
    echo "- curl: $(curl --version | head -n1 | cut -d' ' -f1-2)"
    echo "- Timer: $TIMER; medians of $RUNS_SHORT / $RUNS_LONG / $RUNS_FAILOVER / $RUNS_HANG / $RUNS_HEDGE runs for (1) / (2) / (3) / (4) / (4b); peak RSS: median of $RUNS_RSS runs of \`/usr/bin/time -f %M\`"
    echo "- Server: \`examples/fake_openrouter.rs\` on 127.0.0.1, no artificial delay; the catalog cache was warm."
    echo "- State: each timed freeroute run starts from a copy of the state dir left by one earlier answer ((1), (2), (5)) or from none ((3), (4), (4b)), restored before each run, untimed (hyperfine \`--prepare\`): freeroute counts requests against OpenRouter's 20 a minute and remembers failures, so back-to-back runs would otherwise be refused or skip models."
    echo "- freeroute runs with stdout to /dev/null (no terminal, so no live streaming: the answer is printed whole); curl runs \`curl -sN\` with the same JSON body and headers."
    echo
    echo "| case | freeroute | curl | ratio |"
    echo "|---|---:|---:|---:|"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r a b c d <<< "$row"
        [[ $a == "(5)"* ]] || { b="$b ms"; [[ $c == - ]] || c="$c ms"; }
        echo "| $a | $b | $c | $d |"
    done
    echo
    echo "Targets:"
    echo
    echo "| target | measured | goal | verdict |"
    echo "|---|---:|---|---|"
    for row in "${TARGETS[@]}"; do
        IFS='|' read -r a b c d <<< "$row"
        echo "| $a | $b | $c | $d |"
    done
    echo
    echo "- (1): \`freeroute -q -m bench/short:free \"hi\"\` vs curl POSTing the same request; 20 tokens, $SHORT_BYTES bytes of output."
    echo "- (2): the same with \`bench/long:free\`; 2,000 tokens, $LONG_BYTES bytes of output."
    echo "- (3): \`-m bench/busy-1:free -m bench/busy-2:free -m bench/busy-3:free -m bench/short:free\`, each busy model answering HTTP 429; state dir removed before each run. Cost of the fail-over: **$D3 ms** over (1); $D3SAME ms over the 20-token case timed alongside it under the same fresh-state condition ($(fmt "$FR3BASE") ms)."
    echo "- (4): \`--timeout 4 -m bench/hang:free -m bench/short:free\`; the hung stream sends one keep-alive comment, then nothing. **No hedging**: the hung attempt is abandoned after half of the 4 s deadline, then the next candidate answers."
    echo "- (4b): the same with \`--hedge-after $HEDGE_MS\`: when the hung candidate has no first token after $HEDGE_MS ms, the next one starts beside it, answers, and the hung one is dropped (\`--json\` attempts: \`cancelled\`, \`ok\`). Expected: (1) + $HEDGE_MS ms; measured **$X4H ms** over that."
    echo "- (5): peak RSS (\`%M\`) of the whole process; the (4b) run holds two connections at once."
} > "$ROOT/bench/results.md"
if [[ -n $KEPT ]]; then printf '\n%s\n' "$KEPT" >> "$ROOT/bench/results.md"; fi
log "bench: wrote bench/results.md"
if ((MISSED)); then
    log "bench: $MISSED target(s) missed (see bench/results.md)"
    exit 1
fi
