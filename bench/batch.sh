#!/usr/bin/env bash
# Batch benchmark: 1,000 items through `freeroute batch` against fake rate-limited providers
# (examples/fake_limited.rs) whose per-minute limits are scaled down to a one-second window
# (FREEROUTE_WINDOW_MS=1000): p20, p10 and p5 take 20, 10 and 5 requests per window, 35
# a second in all, and answer in 2-6 ms. The server counts each provider's requests in a
# sliding window of the same length and reports every violation. One run per
# `--concurrency` value (8 and 32), each with a fresh server and fresh state.
#
#   bench/batch.sh          # builds, runs (~1 min), prints a table, writes bench/batch-results.md
#
# Targets, checked at the end (exit status 1 when one is missed, after the report is
# written): answers per second at least 90% of the sum of the limits, no lost item (every
# input id has an `"ok": true` line in the output), no violation.
#
# Knobs (environment): BATCH_ITEMS (1000), BATCH_CONCURRENCY ("8 32"), BATCH_WINDOW_MS
# (1000), BATCH_LIMITS ("p20=20 p10=10 p5=5"), BATCH_ARGS (extra `freeroute batch`
# arguments), BATCH_OUT (the report; bench/batch-results.md), BATCH_KEEP (a directory to
# copy the raw output, stderr, server report and request times of each run into).
#
# Nothing leaves 127.0.0.1: the script re-runs itself in a sealed environment, freeroute
# gets temporary HOME and XDG dirs with the three providers configured as loopback
# providers (no key), and FREEROUTE_DISCOVER=0 FREEROUTE_KEYLESS=0. Servers stop when this
# script's end of their stdin pipe closes, or by themselves after a time limit.
set -euo pipefail

if [[ -z ${_FREEROUTE_BATCH_SEALED:-} ]]; then
    keep=(PATH="$PATH" HOME="$HOME" TERM="${TERM:-dumb}")
    for v in CARGO_HOME RUSTUP_HOME RUSTUP_TOOLCHAIN CARGO_TARGET_DIR BATCH_ITEMS \
        BATCH_CONCURRENCY BATCH_WINDOW_MS BATCH_LIMITS BATCH_ARGS BATCH_OUT BATCH_KEEP; do
        if [[ -n ${!v:-} ]]; then keep+=("$v=${!v}"); fi
    done
    exec env -i _FREEROUTE_BATCH_SEALED=1 "${keep[@]}" bash "$0" "$@"
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ITEMS=${BATCH_ITEMS:-1000}
CONCURRENCY=${BATCH_CONCURRENCY:-8 32}
WINDOW_MS=${BATCH_WINDOW_MS:-1000}
LIMITS=${BATCH_LIMITS:-p20=20 p10=10 p5=5}
EXTRA_ARGS=${BATCH_ARGS:-}
REPORT=${BATCH_OUT:-$ROOT/bench/batch-results.md}
KEEP=${BATCH_KEEP:-}
SERVER_LIMIT_SECS=900
TARGET_FRACTION=0.90
# freeroute's WINDOW_SLACK_MS (src/limiter.rs), for the ceiling in the report.
SLACK_MS=50

log() { printf '%s\n' "$*" >&2; }
die() {
    log "batch-bench: $*"
    exit 1
}
for tool in jq awk; do
    command -v "$tool" > /dev/null || die "$tool is needed"
done
[[ $ITEMS =~ ^[0-9]+$ && $ITEMS -gt 0 ]] || die "BATCH_ITEMS must be a positive number"
[[ $WINDOW_MS =~ ^[0-9]+$ && $WINDOW_MS -gt 0 ]] || die "BATCH_WINDOW_MS must be a positive number"
read -r -a LIMIT_LIST <<< "$LIMITS"
SUM_LIMITS=0
for pl in "${LIMIT_LIST[@]}"; do
    [[ $pl =~ ^[a-z0-9_-]+=[0-9]+$ ]] || die "BATCH_LIMITS entries are NAME=N, not '$pl'"
    SUM_LIMITS=$((SUM_LIMITS + ${pl#*=}))
done
# The sum of the limits, in requests per second.
CAPACITY=$(awk -v s="$SUM_LIMITS" -v w="$WINDOW_MS" 'BEGIN {printf "%.3f", s * 1000 / w}')

# ---- build (before HOME changes: cargo and rustup live there) ---------------------------
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
build_release batch-bench fake_limited

# ---- temp dirs, server, cleanup ---------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/freeroute-batch.XXXXXX")
FAKE_PID=
CTL_FD=
cleanup() {
    local rc=$?
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

# start_server DIR: a fresh server whose stdin is a FIFO held open by this script only
# (if the script dies, even by SIGKILL, the server sees EOF and exits).
start_server() {
    local dir=$1
    mkfifo "$dir/ctl"
    FAKE_LIMITED_TIMES=$dir/times "$FAKE" 0 "$SERVER_LIMIT_SECS" "$WINDOW_MS" "${LIMIT_LIST[@]}" \
        < "$dir/ctl" > "$dir/server.out" 2> "$dir/server.err" &
    FAKE_PID=$!
    exec {CTL_FD}> "$dir/ctl"
    PORT=
    for _ in $(seq 100); do
        PORT=$(head -n1 "$dir/server.out" 2> /dev/null || true)
        [[ -n $PORT ]] && break
        kill -0 "$FAKE_PID" 2> /dev/null || die "the fake server exited: $(cat "$dir/server.err")"
        sleep 0.05
    done
    [[ $PORT =~ ^[0-9]+$ ]] || die "the fake server printed no port"
}
# stop_server DIR: closes the server's stdin; it prints its report and exits.
stop_server() {
    local dir=$1
    exec {CTL_FD}>&-
    CTL_FD=
    wait "$FAKE_PID" || true
    FAKE_PID=
    tail -n1 "$dir/server.out" > "$dir/server.json"
    jq -e .providers "$dir/server.json" > /dev/null || die "no report from the fake server"
}

# fresh_home DIR: sealed HOME and XDG dirs, the providers configured with their limits.
fresh_home() {
    local dir=$1 pl
    export HOME=$dir/home XDG_CONFIG_HOME=$dir/config XDG_CACHE_HOME=$dir/cache
    export XDG_STATE_HOME=$dir/state XDG_DATA_HOME=$dir/data
    mkdir -p "$HOME" "$XDG_CONFIG_HOME/freeroute" "$XDG_CACHE_HOME" "$XDG_STATE_HOME" "$XDG_DATA_HOME"
    for pl in "${LIMIT_LIST[@]}"; do
        printf '[providers.%s]\nbase_url = "http://127.0.0.1:%s/%s/v1"\nmodels = [{ id = "m1", context = 8192 }]\nrequests_per_minute = %s\n\n' \
            "${pl%%=*}" "$PORT" "${pl%%=*}" "${pl#*=}"
    done > "$XDG_CONFIG_HOME/freeroute/config.toml"
}
export FREEROUTE_DISCOVER=0 FREEROUTE_KEYLESS=0 NO_COLOR=1
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

# The input: 1,000 JSONL items with distinct ids.
for ((i = 1; i <= ITEMS; i++)); do
    printf '{"id": "item-%04d", "prompt": "Question %d: answer in one word."}\n' "$i" "$i"
done > "$TMP/input.jsonl"
jq -r .id "$TMP/input.jsonl" | sort > "$TMP/ids"

# ---- runs -------------------------------------------------------------------------------
fmt1() { awk -v a="$1" 'BEGIN {printf "%.1f", a}'; }
ROWS=()
MISSED=0
SUMMARIES=()
DETAILS=()
for c in $CONCURRENCY; do
    [[ $c =~ ^[0-9]+$ && $c -gt 0 ]] || die "BATCH_CONCURRENCY values must be positive numbers"
    dir=$TMP/c$c
    mkdir -p "$dir"
    start_server "$dir"
    fresh_home "$dir"
    log "batch-bench: $ITEMS items, --concurrency $c, server on 127.0.0.1:$PORT (pid $FAKE_PID)"
    t0=${EPOCHREALTIME/[.,]/}
    rc=0
    # shellcheck disable=SC2086 # EXTRA_ARGS: words on purpose
    FREEROUTE_WINDOW_MS=$WINDOW_MS "$FR" batch "$TMP/input.jsonl" -o "$dir/out.jsonl" \
        --concurrency "$c" $EXTRA_ARGS < /dev/null > "$dir/stdout" 2> "$dir/stderr" {CTL_FD}>&- || rc=$?
    t1=${EPOCHREALTIME/[.,]/}
    stop_server "$dir"

    elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e6}')
    jq -r 'select(.ok == true) | .id' "$dir/out.jsonl" 2> /dev/null | sort -u > "$dir/ok-ids" || true
    answered=$(wc -l < "$dir/ok-ids")
    lost=$(comm -23 "$TMP/ids" "$dir/ok-ids" | wc -l)
    lines=$(wc -l < "$dir/out.jsonl")
    violations=$(jq .violations "$dir/server.json")
    requests=$(jq .requests "$dir/server.json")
    rate=$(awk -v n="$answered" -v e="$elapsed" 'BEGIN {printf "%.2f", n / e}')
    fraction=$(awk -v r="$rate" -v c="$CAPACITY" 'BEGIN {printf "%.1f", 100 * r / c}')
    summary=$(grep '^batch:' "$dir/stderr" | tail -n1 || true)
    summary=${summary:-"(no summary line; exit $rc)"}
    per=$(jq -r '.providers | to_entries | map("\(.key): \(.value.answered)/\(.value.requests) req, max \(.value.max_in_window)/\(.value.limit) in a window, \(.value.violations) violations") | join("; ")' "$dir/server.json")
    # The server's view: arrivals after the first window, over the time they took.
    steady=$(sort -k2,2n "$dir/times" | awk -v s="$SUM_LIMITS" '
        NR == 1 {first = $2} {last = $2} END {
            if (NR <= s || last <= first) {print "-"; exit}
            printf "%.2f", (NR - s) / ((last - first) / 1000) }')
    # How far apart the requests that fill a window arrive: request i and request i+LIMIT
    # of a provider, min and mean in ms (at least WINDOW_MS; freeroute adds 50 ms of slack).
    spacing=$(for pl in "${LIMIT_LIST[@]}"; do
        awk -v p="${pl%%=*}" '$1 == p {print $2}' "$dir/times" | sort -n |
            awk -v p="${pl%%=*}" -v l="${pl#*=}" '
                {t[NR] = $1} END {
                    n = 0; sum = 0; min = -1
                    for (i = 1; i + l <= NR; i++) {
                        g = t[i + l] - t[i]; n++; sum += g
                        if (min < 0 || g < min) min = g
                    }
                    if (n) printf "%s %.1f/%.1f ms; ", p, min, sum / n }'
    done)
    spacing=${spacing%; }

    verdict=met
    if awk -v f="$fraction" -v t="$TARGET_FRACTION" 'BEGIN {exit !(f / 100 < t)}' || ((lost > 0 || violations > 0)); then
        verdict="missed"
        MISSED=$((MISSED + 1))
    fi
    ROWS+=("$c|$(fmt1 "$elapsed")|$rate|$fraction%|$answered|$lost|$violations|$requests|$rc|$verdict")
    SUMMARIES+=("--concurrency $c: $summary")
    DETAILS+=("--concurrency $c: server: $per; steady rate after the first window: $steady answers/s; request i to request i+LIMIT, min/mean: ${spacing:--}; $lines output lines; exit $rc")
    if [[ -n $KEEP ]]; then
        mkdir -p "$KEEP/c$c"
        cp "$dir/out.jsonl" "$dir/stderr" "$dir/server.json" "$dir/times" "$KEEP/c$c/"
    fi
    if ((rc != 0)); then log "batch-bench: freeroute batch exited $rc: $(tail -n3 "$dir/stderr")"; fi
    unset HOME XDG_CONFIG_HOME XDG_CACHE_HOME XDG_STATE_HOME XDG_DATA_HOME
done

# ---- report -----------------------------------------------------------------------------
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2> /dev/null || true)
CPU=${CPU:-unknown}
NPROC=$(nproc 2> /dev/null || echo "?")
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD=$(cut -d' ' -f1-3 /proc/loadavg 2> /dev/null || echo "?")
HEAD="concurrency|elapsed s|answers/s|of limits|answered|lost|violations|requests|exit|verdict"

{
    printf '\n%s items; limits %s per %s ms window = %s requests/s; target >= %.0f%%, 0 lost, 0 violations\n' \
        "$ITEMS" "$LIMITS" "$WINDOW_MS" "$CAPACITY" "$(awk -v t="$TARGET_FRACTION" 'BEGIN {print t * 100}')"
    for row in "$HEAD" "${ROWS[@]}"; do
        IFS='|' read -r a b c d e f g h i j <<< "$row"
        printf '%11s %9s %9s %9s %8s %5s %10s %8s %4s %7s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$i" "$j"
    done
    printf '%s\n' "${SUMMARIES[@]}"
} >&2

{
    echo "# freeroute batch under provider rate limits, local fake providers"
    echo
    echo "Generated by \`bench/batch.sh\` on $DATE."
    echo
    echo "- Machine: $NPROC CPUs, $CPU; $(uname -sr); load average (1, 5, 15 min) at the end: $LOAD"
    echo "- freeroute: release build of $REV; $RUSTC"
    echo "- Input: $ITEMS JSONL items \`{\"id\", \"prompt\"}\`, \`freeroute batch INPUT -o OUT --concurrency N${EXTRA_ARGS:+ $EXTRA_ARGS}\`, fresh state dir and fresh server per run."
    echo "- Providers: \`examples/fake_limited.rs\` on 127.0.0.1, one path per provider (\`/NAME/v1\`), each configured with \`requests_per_minute\` and the \"minute\" scaled to $WINDOW_MS ms (\`FREEROUTE_WINDOW_MS=$WINDOW_MS\`): $LIMITS, i.e. **$CAPACITY requests/s** in all. Each answer is a short stream after 2-6 ms."
    echo "- The server counts every request per provider in a sliding window of $WINDOW_MS ms (on each arrival: arrivals in the last $WINDOW_MS ms, this one included); more than the limit is a violation (and gets HTTP 429)."
    echo "- Ceiling: freeroute's limiter keeps $SLACK_MS ms of slack on each window (\`WINDOW_SLACK_MS\` in src/limiter.rs), so after the first window the steady rate is at most $WINDOW_MS/($WINDOW_MS+$SLACK_MS) = $(awk -v w="$WINDOW_MS" -v s="$SLACK_MS" 'BEGIN {printf "%.1f", 100 * w / (w + s)}')% of the limits (99.9% with real 60 s minutes); the first window's burst (all $SUM_LIMITS requests at once) lifts the whole-run figure a little above that."
    echo "- Answers/s: items with an \`\"ok\": true\` line in OUT divided by the wall time of the \`freeroute batch\` process; \"of limits\" is that over $CAPACITY. Lost: input ids with no \`\"ok\": true\` line."
    echo
    echo "| concurrency | elapsed | answers/s | of limits | answered | lost | violations | requests | exit | verdict |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r a b c d e f g h i j <<< "$row"
        echo "| $a | $b s | $c | $d | $e | $f | $g | $h | $i | $j |"
    done
    echo
    echo "Summary lines (stderr):"
    echo
    for s in "${SUMMARIES[@]}"; do echo "- \`$s\`"; done
    echo
    echo "Server side:"
    echo
    for s in "${DETAILS[@]}"; do echo "- $s"; done
} > "$REPORT"
log "batch-bench: wrote ${REPORT#"$ROOT"/}"
if ((MISSED)); then
    log "batch-bench: $MISSED run(s) missed a target (see the report)"
    exit 1
fi
