#!/usr/bin/env bash
# Benchmarks `freeroute serve` side by side with the client straight to the fake provider
# (examples/fake_openrouter.rs, no artificial delay) and with the LiteLLM proxy configured
# with the same fake as its models, in one run:
#
#   bench/serve.sh        # builds, measures, prints a table, appends to bench/results.md
#
# Cases (all streamed, read to `[DONE]` by examples/bench_client.rs): a 20-token answer and a
# 2,000-token stream, one request at a time (medians); throughput with 64 concurrent
# clients; serve's idle RSS (after start-up) and peak RSS (after everything).
# Targets: added latency under 1 ms at the median; the 2,000-token stream within 1.1x of
# direct; at least 5x LiteLLM's throughput; idle RSS under 15 MB.
#
# Knobs: RUNS_SHORT (300), RUNS_LONG (60), THROUGHPUT_REQUESTS (3000; LiteLLM gets a sixth),
# CONCURRENCY (64), LITELLM_VENV (~/.cache/freeroute-ci/litellm; `pip install
# 'litellm[proxy]'` there when it lacks it), BENCH_NO_LITELLM=1 (skip it).
#
# Nothing leaves 127.0.0.1: the fake, serve and LiteLLM listen there, LiteLLM uses its
# bundled model-cost map (no fetch), and every process is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS_SHORT=${RUNS_SHORT:-300}
RUNS_LONG=${RUNS_LONG:-60}
THROUGHPUT_REQUESTS=${THROUGHPUT_REQUESTS:-3000}
CONCURRENCY=${CONCURRENCY:-64}
LITELLM_VENV=${LITELLM_VENV:-$HOME/.cache/freeroute-ci/litellm}

log() { printf '%s\n' "$*" >&2; }
die() {
    log "bench: $*"
    exit 1
}

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
build_release serve-bench fake_openrouter
cargo build --release --quiet --example bench_client
LOAD=$(dirname "$FAKE")/bench_client

TMP=$(mktemp -d "${TMPDIR:-/tmp}/freeroute-serve-bench.XXXXXX")
PIDS=()
CTL_FD=
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
    if [[ -n $CTL_FD ]]; then exec {CTL_FD}>&-; fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the fake provider --------------------------------------------------------------
mkfifo "$TMP/ctl"
"$FAKE" 0 1800 < "$TMP/ctl" > "$TMP/port" 2> "$TMP/fake.err" &
PIDS+=($!)
exec {CTL_FD}> "$TMP/ctl"
FAKE_PORT=
for _ in $(seq 100); do
    FAKE_PORT=$(head -n1 "$TMP/port" 2> /dev/null || true)
    [[ -n $FAKE_PORT ]] && break
    sleep 0.05
done
[[ $FAKE_PORT =~ ^[0-9]+$ ]] || die "the fake server printed no port"
DIRECT=http://127.0.0.1:$FAKE_PORT/api/v1/chat/completions

# ---- freeroute serve, in a sealed home; the fake as a provider of the user's (loopback,
# no key: no free-tier window to run into) --------------------------------------------
export HOME=$TMP/home XDG_CONFIG_HOME=$TMP/config XDG_CACHE_HOME=$TMP/cache
export XDG_STATE_HOME=$TMP/state XDG_DATA_HOME=$TMP/data
export FREEROUTE_DISCOVER=0 FREEROUTE_KEYLESS=0 NO_COLOR=1
export NO_PROXY='*' no_proxy='*'
unset OPENROUTER_API_KEY HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
mkdir -p "$HOME" "$XDG_CONFIG_HOME/freeroute"
printf '[providers.bench]\nbase_url = "http://127.0.0.1:%s/api/v1"\n' "$FAKE_PORT" > "$XDG_CONFIG_HOME/freeroute/config.toml"
"$FR" serve --listen 127.0.0.1:0 {CTL_FD}>&- < /dev/null 2> "$TMP/serve.err" &
SERVE_PID=$!
PIDS+=("$SERVE_PID")
SERVE_PORT=
for _ in $(seq 200); do
    SERVE_PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$TMP/serve.err" 2> /dev/null | grep -o '[0-9]*$' || true)
    [[ -n $SERVE_PORT ]] && break
    kill -0 "$SERVE_PID" 2> /dev/null || die "serve exited: $(cat "$TMP/serve.err")"
    sleep 0.05
done
[[ -n $SERVE_PORT ]] || die "serve printed no address: $(cat "$TMP/serve.err")"
SERVE=http://127.0.0.1:$SERVE_PORT/v1/chat/completions
rss_kb() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
sleep 0.5
IDLE_KB=$(rss_kb "$SERVE_PID" VmRSS)

# ---- the LiteLLM proxy --------------------------------------------------------------
LITELLM=
LITELLM_NOTE=
# LiteLLM refuses to start without a master key; clients send it as their bearer token.
LITELLM_KEY=sk-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
if [[ -z ${BENCH_NO_LITELLM:-} ]]; then
    if ! "$LITELLM_VENV/bin/python" -c 'import litellm.proxy' 2> /dev/null; then
        log "serve-bench: installing litellm[proxy] into $LITELLM_VENV"
        { python3 -m venv "$LITELLM_VENV" && "$LITELLM_VENV/bin/pip" install -q 'litellm[proxy]'; } > "$TMP/litellm-install.log" 2>&1 ||
            LITELLM_NOTE="could not install litellm[proxy]: $(tail -n 3 "$TMP/litellm-install.log")"
    fi
    if [[ -z $LITELLM_NOTE ]]; then
        LPORT=$("$LITELLM_VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        cat > "$TMP/litellm.yaml" << YAML
model_list:
  - model_name: bench/short:free
    litellm_params: {model: openai/bench/short:free, api_base: "http://127.0.0.1:$FAKE_PORT/api/v1", api_key: sk-bench}
  - model_name: bench/long:free
    litellm_params: {model: openai/bench/long:free, api_base: "http://127.0.0.1:$FAKE_PORT/api/v1", api_key: sk-bench}
litellm_settings:
  telemetry: false
YAML
        LITELLM_MASTER_KEY=$LITELLM_KEY LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False DISABLE_ADMIN_UI=True \
            "$LITELLM_VENV/bin/litellm" --config "$TMP/litellm.yaml" --host 127.0.0.1 --port "$LPORT" --num_workers 1 \
            {CTL_FD}>&- < /dev/null > "$TMP/litellm.log" 2>&1 &
        PIDS+=($!)
        for _ in $(seq 600); do
            if curl -s --noproxy '*' -o /dev/null -w '%{http_code}' "http://127.0.0.1:$LPORT/health/liveliness" 2> /dev/null | grep -q 200; then
                LITELLM=http://127.0.0.1:$LPORT/v1/chat/completions
                break
            fi
            sleep 0.1
        done
        [[ -n $LITELLM ]] || LITELLM_NOTE="the LiteLLM proxy did not start within 60 s: $(tail -n 5 "$TMP/litellm.log")"
    fi
    LITELLM_VERSION=$("$LITELLM_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2> /dev/null || echo "?")
else
    LITELLM_NOTE="skipped (BENCH_NO_LITELLM)"
fi

# ---- measurements -------------------------------------------------------------------
measure() { # measure URL MODEL REQUESTS CONCURRENCY: one JSON line
    "$LOAD" "$1" "$2" "$3" "$4" "$LITELLM_KEY" {CTL_FD}>&- < /dev/null
}
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
declare -A R
for target in direct serve litellm; do
    case $target in
        direct) url=$DIRECT ;;
        serve) url=$SERVE ;;
        litellm) url=$LITELLM ;;
    esac
    [[ -n $url ]] || continue
    log "serve-bench: $target"
    measure "$url" bench/short:free 20 1 > /dev/null # warm-up
    R[$target.short]=$(measure "$url" bench/short:free "$RUNS_SHORT" 1)
    R[$target.long]=$(measure "$url" bench/long:free "$RUNS_LONG" 1)
    n=$THROUGHPUT_REQUESTS
    [[ $target == litellm ]] && n=$((THROUGHPUT_REQUESTS / 6))
    R[$target.many]=$(measure "$url" bench/short:free "$n" "$CONCURRENCY")
    for c in short long many; do
        [[ $(field "${R[$target.$c]}" errors) == 0 ]] || die "$target $c had errors: ${R[$target.$c]}"
    done
done
PEAK_KB=$(rss_kb "$SERVE_PID" VmHWM)

# ---- report -------------------------------------------------------------------------
med() { field "${R[$1]}" median_ms; }
per() { field "${R[$1]}" per_s; }
ratio() { python3 -c 'import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f"{a / b:.2f}")' "$1" "$2"; }
diff_ms() { python3 -c 'import sys; print(f"{float(sys.argv[1]) - float(sys.argv[2]):+.3f}")' "$1" "$2"; }
lit() { if [[ -n $LITELLM ]]; then "$@"; else echo "–"; fi; }
added=$(diff_ms "$(med serve.short)" "$(med direct.short)")
long_ratio=$(ratio "$(med serve.long)" "$(med direct.long)")
vs_litellm=–
if [[ -n $LITELLM ]]; then vs_litellm=$(ratio "$(per serve.many)" "$(per litellm.many)"); fi
mb() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1024:.1f}")' "$1"; }
report=$(
    cat << EOF

## \`freeroute serve\` (bench/serve.sh, $(date -u +%Y-%m-%d), $REV)

$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $RUSTC; LiteLLM ${LITELLM_VERSION:-–} (\`litellm[proxy]\`, one worker).
Streamed requests read to \`[DONE]\` by examples/bench_client.rs (reqwest, one thread) on loopback;
the fake answers at once. Medians of $RUNS_SHORT (20 tokens) and $RUNS_LONG (2,000 tokens) requests
one at a time; throughput: $THROUGHPUT_REQUESTS requests ($((THROUGHPUT_REQUESTS / 6)) for LiteLLM) by $CONCURRENCY clients at once.

| case | direct to the fake | through serve | through LiteLLM | target |
|---|---:|---:|---:|---|
| 20-token answer, median | $(med direct.short) ms | $(med serve.short) ms | $(lit med litellm.short) ms | added $added ms (< 1 ms) |
| 2,000-token stream, median | $(med direct.long) ms | $(med serve.long) ms | $(lit med litellm.long) ms | ${long_ratio}x direct (≤ 1.1x) |
| $CONCURRENCY clients, requests/s | $(per direct.many) | $(per serve.many) | $(lit per litellm.many) | ${vs_litellm}x LiteLLM (≥ 5x) |
| serve's RSS, idle / peak | | $(mb "$IDLE_KB") / $(mb "$PEAK_KB") MiB | | idle < 15 MB |
EOF
)
if [[ -n $LITELLM_NOTE ]]; then report+=$'\n\n'"LiteLLM: $LITELLM_NOTE"; fi
printf '%s\n' "$report"
printf '%s\n' "$report" >> "$ROOT/bench/results.md"
log "serve-bench: appended to bench/results.md"
