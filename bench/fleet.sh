#!/usr/bin/env bash
# Fleet simulation: 500 prompts against a scripted fake fleet of 20 free models
# (examples/fake_fleet.rs: per-model latency distributions with heavy tails and hangs,
# upstream 429s, 500s, errors mid-stream, per-model quotas, periodic outages), sent
#   - by a baseline that picks a random model per prompt and sends exactly one request
#     with curl (what openrouter/free does: random choice, no fallback), and
#   - by the release `freeroute`, with one state dir shared by all the runs of a phase,
# each sequentially and with `xargs -P 8`; and by freeroute again with its clock running
# FLEET_CLOCK_X (10) times faster than the wall clock (phases frx-*): the fleet's latencies
# are scaled down about tenfold, but freeroute's memory (cool-downs of 30 s and more,
# decay, quota windows) runs on the wall clock; `FREEROUTE_NOW_MS`, set per run, puts its
# memory on the fleet's time scale.
#
#   bench/fleet.sh          # builds, runs the nine phases (~13 min), writes bench/fleet-results.md
#   FLEET_PROFILE="base heavy" FLEET_SEEDS="1 2 3" FLEET_PROMPTS=200 bench/fleet.sh
#                           # three runs per phase and profile (~30 min), one line per run and
#                           # phase in bench/fleet-summary.tsv (FLEET_SUMMARY)
#
# Two fleet profiles (FLEET_PROFILE, examples/fake_fleet.rs): base, and heavy (the same 20
# models with Pareto-tailed first tokens on four fast ones, hangs past the 10 s deadline on
# three, a slow class of three); the report is bench/fleet-results.md for base and
# bench/fleet-results-heavy.md for heavy. Each run also plays the clairvoyant client on the
# same profile, seed and prompts (bench/fleet_oracle.py, on the fleet's exact fates) and
# reports freeroute's p95 as a multiple of its p95 per phase, with the issue's goal: within
# 2x in every phase, success no lower than the random baseline's; beside it, the p95 of
# the informed client (the same simulation without foresight but with a perfect memory:
# each model's distribution, every quota count), what freeroute's choices could reach.
#
# Phases *-rate send the prompts open-loop instead, FLEET_RATE (20) a second whatever the
# answers take, so both clients meet the same offered load: `xargs -P 8` is a closed loop in
# which the faster client sends more, until the fleet's quotas are the limit.
#
# Knobs (environment): FLEET_PROMPTS (500), FLEET_PARALLEL (8), FLEET_RATE (20), FLEET_TIMEOUT
# (10 s, for both clients), FLEET_SEED (1: the fleet's fates), FLEET_PHASES ("base-seq
# base-par base-rate fr-seq fr-par fr-rate frx-seq frx-par frx-rate"), FLEET_CLOCK_X (10),
# FLEET_FR_ARGS (extra freeroute arguments, e.g. "--hedge-after 300"), FLEET_OUT (the report;
# bench/fleet-results[-heavy].md), FLEET_KEEP (a directory to copy the raw per-prompt results and
# freeroute's state into), FLEET_PROFILE (base; several words: one run per profile),
# FLEET_SEEDS (several seeds: one run per seed, each report named ...-seedN.md, FLEET_KEEP
# split per run), FLEET_SUMMARY (a TSV file the run appends one line per phase to: profile,
# seed, prompts, phase, answered, median, p95, the clairvoyant client's p95 for that phase,
# p95 as a multiple of it, requests per answer, success >= random's, build; the simulated
# clients get lines of their own, phase oracle-* and informed-*; default, when
# FLEET_PROFILE or FLEET_SEEDS has several words: bench/fleet-summary.tsv).
#
# Nothing leaves 127.0.0.1: the script re-runs itself in a sealed environment, freeroute
# gets temporary HOME and XDG dirs with the fleet configured as a custom provider
# (`[providers.fleet]`, loopback, no key: no OpenRouter request counting), and
# FREEROUTE_DISCOVER=0 FREEROUTE_KEYLESS=0. Every phase gets a fresh server (so quotas and
# outages start from the same clock) and a fresh state dir. Servers stop when this script's
# end of their stdin pipe closes, or by themselves after a time limit.
set -euo pipefail

if [[ -z ${_FREEROUTE_FLEET_SEALED:-} ]]; then
    keep=(PATH="$PATH" HOME="$HOME" TERM="${TERM:-dumb}")
    for v in CARGO_HOME RUSTUP_HOME RUSTUP_TOOLCHAIN CARGO_TARGET_DIR FLEET_PROMPTS \
        FLEET_PARALLEL FLEET_RATE FLEET_TIMEOUT FLEET_SEED FLEET_PHASES FLEET_CLOCK_X FLEET_FR_ARGS FLEET_OUT FLEET_KEEP \
        FLEET_PROFILE FLEET_SEEDS FLEET_SUMMARY; do
        if [[ -n ${!v:-} ]]; then keep+=("$v=${!v}"); fi
    done
    exec env -i _FREEROUTE_FLEET_SEALED=1 "${keep[@]}" bash "$0" "$@"
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Several profiles or seeds: one run of this script each, the reports named apart.
PROFILES=${FLEET_PROFILE:-base}
SEEDS=${FLEET_SEEDS:-${FLEET_SEED:-1}}
read -ra profiles <<< "$PROFILES"
read -ra seeds <<< "$SEEDS"
if ((${#profiles[@]} > 1 || ${#seeds[@]} > 1)); then
    summary_file=${FLEET_SUMMARY:-$ROOT/bench/fleet-summary.tsv}
    for profile in "${profiles[@]}"; do
        for seed in "${seeds[@]}"; do
            out=${FLEET_OUT:-}
            if [[ -n $out && ${#profiles[@]} -gt 1 ]]; then out=${out%.md}-$profile.md; fi
            if ((${#seeds[@]} > 1)); then
                [[ -n $out ]] || out=$ROOT/bench/fleet-results$([[ $profile == base ]] || echo "-$profile").md
                out=${out%.md}-seed$seed.md
            fi
            run_keep=${FLEET_KEEP:+$FLEET_KEEP/$profile-seed$seed}
            FLEET_PROFILE=$profile FLEET_SEED=$seed FLEET_SEEDS="" FLEET_OUT=$out FLEET_KEEP=$run_keep \
                FLEET_SUMMARY=$summary_file bash "$0" "$@"
        done
    done
    exit 0
fi

PROMPTS=${FLEET_PROMPTS:-500}
PARALLEL=${FLEET_PARALLEL:-8}
RATE=${FLEET_RATE:-20}
TIMEOUT=${FLEET_TIMEOUT:-10}
SEED=$SEEDS
PROFILE=$PROFILES
PHASES=${FLEET_PHASES:-base-seq base-par base-rate fr-seq fr-par fr-rate frx-seq frx-par frx-rate}
CLOCK_X=${FLEET_CLOCK_X:-10}
FR_ARGS=${FLEET_FR_ARGS:-}
SUMMARY=${FLEET_SUMMARY:-}
SERVER_LIMIT_SECS=1800

log() { printf '%s\n' "$*" >&2; }
die() {
    log "fleet: $*"
    exit 1
}
for tool in curl jq xargs awk python3; do
    command -v "$tool" > /dev/null || die "$tool is needed"
done
case $PROFILE in
    base) DEFAULT_REPORT=$ROOT/bench/fleet-results.md ;;
    heavy) DEFAULT_REPORT=$ROOT/bench/fleet-results-heavy.md ;;
    *) die "FLEET_PROFILE: base or heavy, not $PROFILE" ;;
esac
REPORT=${FLEET_OUT:-$DEFAULT_REPORT}

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
build_release fleet fake_fleet
FLEET=$FAKE
# The last commit that changed freeroute itself (REV may be a later bench-only commit).
SRC_REV=$(git -C "$ROOT" log -1 --format=%h -- src Cargo.toml Cargo.lock 2> /dev/null || true)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/freeroute-fleet.XXXXXX")
FLEET_PID=
CTL_FD=
cleanup() {
    local rc=$?
    if [[ -n $CTL_FD ]]; then exec {CTL_FD}>&-; fi
    if [[ -n $FLEET_PID ]] && kill -0 "$FLEET_PID" 2> /dev/null; then
        kill "$FLEET_PID" 2> /dev/null || true
        wait "$FLEET_PID" 2> /dev/null || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_fleet DIR [RETRY_SCALE]: a fresh server whose stdin is a FIFO held open by this
# script only; its quota 429s' Retry-After is multiplied by RETRY_SCALE (clock ×N phases).
start_fleet() {
    local dir=$1 retry_scale=${2:-1}
    mkfifo "$dir/ctl"
    "$FLEET" 0 "$SERVER_LIMIT_SECS" "$SEED" "$retry_scale" "$PROFILE" < "$dir/ctl" > "$dir/server.out" 2> "$dir/server.err" &
    FLEET_PID=$!
    exec {CTL_FD}> "$dir/ctl"
    PORT=
    for _ in $(seq 100); do
        PORT=$(head -n1 "$dir/server.out" 2> /dev/null || true)
        [[ -n $PORT ]] && break
        kill -0 "$FLEET_PID" 2> /dev/null || die "the fleet server exited: $(cat "$dir/server.err")"
        sleep 0.05
    done
    [[ $PORT =~ ^[0-9]+$ ]] || die "the fleet server printed no port"
    BASE=http://127.0.0.1:$PORT/api/v1
}
# stop_fleet DIR: closes the server's stdin; it prints its counters and exits.
stop_fleet() {
    local dir=$1
    exec {CTL_FD}>&-
    CTL_FD=
    wait "$FLEET_PID" || true
    FLEET_PID=
    tail -n1 "$dir/server.out" > "$dir/server.json"
    jq -e .models "$dir/server.json" > /dev/null || die "no counters from the fleet server"
}

# A sealed home for freeroute, fresh per phase.
fresh_home() {
    local dir=$1
    export HOME=$dir/home XDG_CONFIG_HOME=$dir/config XDG_CACHE_HOME=$dir/cache
    export XDG_STATE_HOME=$dir/state XDG_DATA_HOME=$dir/data
    mkdir -p "$HOME" "$XDG_CONFIG_HOME/freeroute" "$XDG_CACHE_HOME" "$XDG_STATE_HOME" "$XDG_DATA_HOME"
    printf '[providers.fleet]\nbase_url = "%s"\n' "$BASE" > "$XDG_CONFIG_HOME/freeroute/config.toml"
}
export FREEROUTE_DISCOVER=0 FREEROUTE_KEYLESS=0 NO_COLOR=1
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

# The workers: one prompt each, timed from fork to exit, results in files named by prompt.
cat > "$TMP/fr-one" << 'EOF'
#!/usr/bin/env bash
# fr-one I: prompt I through freeroute; writes $OUT/I.json and $OUT/I.t ("I µs exit-code").
i=$1
printf -v prompt 'fleet prompt %04d: answer in one line' "$i"
t0=${EPOCHREALTIME/[.,]/}
if [[ -n $CLOCK_T0_US ]]; then
    # freeroute's clock, CLOCK_X times faster than the wall clock since the phase began.
    # It goes on at that rate during the run (a wait for a cool-down lasts 1/CLOCK_X).
    export FREEROUTE_NOW_MS=$(((CLOCK_T0_US + (t0 - CLOCK_T0_US) * CLOCK_X) / 1000))
    export FREEROUTE_CLOCK_RATE=$CLOCK_X
fi
# -q, unless FR_ARGS asks for the trace (-v; kept in $OUT/I.err, see FLEET_KEEP).
quiet=-q
if [[ " $FR_ARGS " == *" -v "* ]]; then quiet=; fi
# shellcheck disable=SC2086 # FR_ARGS and quiet: words on purpose
FREEROUTE_SEED=$i "$FR" --json $quiet --timeout "$TIMEOUT" $FR_ARGS "$prompt" < /dev/null > "$OUT/$i.json" 2> "$OUT/$i.err"
rc=$?
t1=${EPOCHREALTIME/[.,]/}
echo "$i $((t1 - t0)) $rc" > "$OUT/$i.t"
EOF
cat > "$TMP/curl-one" << 'EOF'
#!/usr/bin/env bash
# curl-one I MODEL: prompt I to MODEL, one request; writes $OUT/I.sse and $OUT/I.t.
i=$1 model=$2
printf -v body '{"model":"%s","messages":[{"role":"user","content":"fleet prompt %04d: answer in one line"}],"stream":true,"stream_options":{"include_usage":true}}' "$model" "$i"
t0=${EPOCHREALTIME/[.,]/}
code=$(curl -sN --noproxy '*' --max-time "$TIMEOUT" -H "Content-Type: application/json" \
    -H "Accept: text/event-stream" -o "$OUT/$i.sse" -w '%{http_code}' "$BASE/chat/completions" --data-binary "$body")
rc=$?
t1=${EPOCHREALTIME/[.,]/}
echo "$i $((t1 - t0)) $rc $code" > "$OUT/$i.t"
EOF
chmod +x "$TMP/fr-one" "$TMP/curl-one"
export FR TIMEOUT FR_ARGS CLOCK_X CLOCK_T0_US=

# pace P: how the prompts are sent, for the log.
pace() { if [[ $1 == rate ]]; then echo "$RATE a second"; else echo "$1 at a time"; fi; }

# send P WORKER: runs WORKER once per line of stdin (the line's words as arguments), P at a
# time (xargs -P), or with P=rate open-loop: line i starts at (i-1)/RATE s, whatever the
# earlier ones are doing.
send() {
    local p=$1 worker=$2
    if [[ $p != rate ]]; then
        xargs -P "$p" -L 1 "$worker"
        return
    fi
    local t0 i=0 line due now pids=()
    t0=${EPOCHREALTIME/[.,]/}
    while read -r line; do
        due=$((t0 + i * 1000000 / RATE))
        now=${EPOCHREALTIME/[.,]/}
        if ((due > now)); then sleep "$(((due - now) / 1000000)).$(printf '%06d' $(((due - now) % 1000000)))"; fi
        # shellcheck disable=SC2086 # the line's words as arguments
        "$worker" $line &
        pids+=($!)
        i=$((i + 1))
    done
    # Only these: the fleet server is a child of this shell too.
    wait "${pids[@]}"
}

# Size in billions from an id (`m01-405b`, `m08-30b-a3b` -> 30), for "how big a model answered".
size_of() { sed -E 's|.*/m[0-9]+-([0-9.]+)b.*|\1|; s/^[^0-9].*$/-/'; }

# run_phase NAME: runs the phase and writes $TMP/NAME/rows.tsv:
#   prompt  µs  answered(1/0)  model  requests  wasted  outcomes
run_phase() {
    local name=$1 dir=$TMP/$1 p=1 kind
    case $name in
        base-seq) kind=base ;;
        base-par) kind=base p=$PARALLEL ;;
        base-rate) kind=base p=rate ;;
        fr-seq | frx-seq) kind=fr ;;
        fr-par | frx-par) kind=fr p=$PARALLEL ;;
        fr-rate | frx-rate) kind=fr p=rate ;;
        *) die "unknown phase $name (FLEET_PHASES: base-seq base-par base-rate fr-seq fr-par fr-rate frx-seq frx-par frx-rate)" ;;
    esac
    mkdir -p "$dir/out"
    # freeroute on a clock N times faster reads the fleet's Retry-After on that clock.
    if [[ $name == frx-* ]]; then start_fleet "$dir" "$CLOCK_X"; else start_fleet "$dir"; fi
    export OUT=$dir/out BASE
    local t0 t1
    if [[ $kind == fr ]]; then
        fresh_home "$dir"
        # Untimed: fill the catalog cache (no chat request), and check the plan.
        local n
        n=$("$FR" models --json < /dev/null {CTL_FD}>&- | jq 'length')
        [[ $n == 20 ]] || die "freeroute sees $n fleet models, not 20"
        log "fleet: $name: $PROMPTS prompts through freeroute, $(pace "$p") (server on 127.0.0.1:$PORT)"
        t0=${EPOCHREALTIME/[.,]/}
        CLOCK_T0_US=
        if [[ $name == frx-* ]]; then CLOCK_T0_US=$t0; fi
        seq 1 "$PROMPTS" | send "$p" "$TMP/fr-one" {CTL_FD}>&-
        t1=${EPOCHREALTIME/[.,]/}
        CLOCK_T0_US=
    else
        # The eligible free models, from the catalog; one drawn at random per prompt.
        curl -s --noproxy '*' "$BASE/models" |
            jq -r '.data[] | select(.pricing.prompt == "0" and .pricing.completion == "0") | .id' > "$dir/eligible"
        [[ $(wc -l < "$dir/eligible") == 20 ]] || die "the catalog lists $(wc -l < "$dir/eligible") free models"
        awk -v n="$PROMPTS" -v seed="$SEED" 'NR == FNR {m[NR] = $0; k = NR; next}
            END {srand(seed); for (i = 1; i <= n; i++) print i, m[1 + int(rand() * k)]}' \
            "$dir/eligible" /dev/null > "$dir/assign"
        log "fleet: $name: $PROMPTS prompts through curl to a random model, $(pace "$p") (server on 127.0.0.1:$PORT)"
        t0=${EPOCHREALTIME/[.,]/}
        send "$p" "$TMP/curl-one" < "$dir/assign" {CTL_FD}>&-
        t1=${EPOCHREALTIME/[.,]/}
    fi
    stop_fleet "$dir"
    echo $(((t1 - t0) / 1000)) > "$dir/wall_ms"
    local i t us rc code model ok n wasted outcomes
    : > "$dir/rows.tsv"
    for ((i = 1; i <= PROMPTS; i++)); do
        read -r _ us rc code < "$dir/out/$i.t" || die "$name: prompt $i left no timing"
        if [[ $kind == fr ]]; then
            # ok, the answering model, and every attempt's outcome, from --json.
            t=$(jq -r '[(if .ok and ((.content // "") | test("lazy dog")) then 1 else 0 end), (.model // "-"),
                    (.attempts | length),
                    ([.attempts[].outcome] + (if .ok then [] else ["run failed: \(.error.kind)"] end) | join(","))] | @tsv' \
                "$dir/out/$i.json" 2> /dev/null) ||
                t=$(printf '0\t-\t0\tno-json(exit %s)' "$rc")
            IFS=$'\t' read -r ok model n outcomes <<< "$t"
            wasted=$((n - ok))
        else
            model=$(awk -v i="$i" '$1 == i {print $2}' "$dir/assign")
            ok=0
            if [[ $rc == 0 && $code == 200 ]] && grep -q '"finish_reason":"stop"' "$dir/out/$i.sse" &&
                grep -q '^data: \[DONE\]' "$dir/out/$i.sse" && ! grep -q '"error"' "$dir/out/$i.sse"; then
                ok=1
            fi
            n=1 wasted=$((1 - ok))
            if ((ok)); then
                outcomes=ok
            elif [[ $rc == 28 ]]; then
                outcomes=curl_timeout
            elif [[ $code == 200 ]]; then
                outcomes=error_in_stream
            else
                outcomes=http_$code
            fi
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$us" "$ok" "$model" "$n" "$wasted" "$outcomes" >> "$dir/rows.tsv"
    done
    if [[ -n ${FLEET_KEEP:-} ]]; then
        mkdir -p "$FLEET_KEEP/$name"
        cp -a "$dir/rows.tsv" "$dir/server.json" "$dir/out" "$FLEET_KEEP/$name/"
        if [[ $kind == fr ]]; then cp -a "$XDG_STATE_HOME/freeroute" "$FLEET_KEEP/$name/state"; fi
    fi
}

# stats FILE: "answered n median p95" of column 2 (µs -> ms) over rows with column 3 == 1,
# then "median p95" over all rows; nearest-rank percentiles.
pct() { # reads numbers, prints "median p95"
    sort -n | awk '{a[NR] = $1} END {if (NR == 0) {print "- -"; exit}
        m = int((NR + 1) / 2); q = int(0.95 * NR); if (q < 0.95 * NR) q++
        printf "%.0f %.0f\n", a[m] / 1000, a[q] / 1000}'
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2> /dev/null || echo "?")
for ph in $PHASES; do run_phase "$ph"; done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2> /dev/null || echo "?")

# The clairvoyant client and the random baseline, simulated on the same profile, seed and
# prompts (bench/fleet_oracle.py on the fleet's exact fates; the random one plays this
# script's own draw when a base phase ran): $TMP/oracle.tsv, per phase (seq, par, rate):
#   phase seed prompts oracle_answered oracle_median oracle_p95 random_answered random_median random_p95
#   informed_answered informed_median informed_p95 (the informed client: no foresight, perfect memory)
ASSIGN=
for ph in base-seq base-par base-rate; do
    if [[ -f $TMP/$ph/assign ]]; then
        ASSIGN=$TMP/$ph/assign
        break
    fi
done
log "fleet: the clairvoyant client (bench/fleet_oracle.py, profile $PROFILE, seed $SEED)"
python3 "$ROOT/bench/fleet_oracle.py" --bin "$FLEET" --profile "$PROFILE" --seeds "$SEED" \
    --prompts "$PROMPTS" --parallel "$PARALLEL" --rate "$RATE" --timeout "$TIMEOUT" \
    ${ASSIGN:+--assign "$ASSIGN"} --tsv > "$TMP/oracle.tsv" || die "bench/fleet_oracle.py failed"

# oracle_of SUFFIX: "answered median p95 random_answered random_median random_p95" of the
# simulated phase SUFFIX (seq, par, rate).
oracle_of() { awk -F'\t' -v k="$1" '$1 == k {print $4, $5, $6, $7, $8, $9}' "$TMP/oracle.tsv"; }
# informed_of SUFFIX: "answered median p95" of the informed client in phase SUFFIX.
informed_of() { awk -F'\t' -v k="$1" '$1 == k {print $10, $11, $12}' "$TMP/oracle.tsv"; }
# times_of A B: A / B to two decimals.
times_of() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

# phase_stats NAME: "answered median p95 requests" of a phase run (p95 over answered prompts).
phase_stats() {
    local dir=$TMP/$1 answered reqs
    answered=$(awk -F'\t' '$3 == 1' "$dir/rows.tsv" | wc -l)
    reqs=$(jq '[.models[].requests] | add' "$dir/server.json")
    echo "$answered $(awk -F'\t' '$3 == 1 {print $2}' "$dir/rows.tsv" | pct) $reqs"
}

# judge NAME: "p95-multiple requests-per-answer random-answered random-source verdict" for a
# phase run: its p95 as a multiple of the clairvoyant client's, and the issue's goal (within
# 2x, success no lower than the random baseline's: measured if that phase ran, else simulated).
judge() {
    local ph=$1 suffix=${1#*-} answered median p95 reqs o_ans o50 o95 r_ans r50 r95 random src
    read -r answered median p95 reqs <<< "$(phase_stats "$ph")"
    read -r o_ans o50 o95 r_ans r50 r95 <<< "$(oracle_of "$suffix")"
    if [[ " $PHASES " == *" base-$suffix "* ]]; then
        random=$(awk -F'\t' '$3 == 1' "$TMP/base-$suffix/rows.tsv" | wc -l) src=measured
    else
        random=$r_ans src=simulated
    fi
    awk -v a="$answered" -v p="$p95" -v r="$reqs" -v o="$o95" -v ra="$random" -v src="$src" -v kind="${ph%%-*}" 'BEGIN {
        x = (o > 0 && p != "-") ? p / o : -1
        rpa = a ? r / a : 0
        if (kind == "base") v = "-"
        else v = ((x >= 0 && x <= 2) ? "within 2x: yes" : "within 2x: **no**") "; " \
            ((a >= ra) ? "success >= random: yes" : "success >= random: **no**")
        printf "%s %.2f %s %s %s\n", (x >= 0 ? sprintf("%.2f", x) : "-"), rpa, ra, src, v}'
}

# Against the clairvoyant client: one Markdown row per phase run.
against_oracle() {
    local ph answered median p95 reqs x rpa random src verdict o_ans o50 o95 r_ans r50 r95 k_ans k50 k95
    echo "| run | answered | p95 | clairvoyant p95 | p95 / clairvoyant's | informed client's p95 (× clairvoyant's) | requests per answer | random answered | goal (within 2x; success >= random) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for ph in $PHASES; do
        read -r answered median p95 reqs <<< "$(phase_stats "$ph")"
        read -r o_ans o50 o95 r_ans r50 r95 <<< "$(oracle_of "${ph#*-}")"
        read -r k_ans k50 k95 <<< "$(informed_of "${ph#*-}")"
        read -r x rpa random src verdict <<< "$(judge "$ph")"
        printf '| %s | %s/%s | %s ms | %.0f ms | **%s×** | %.0f ms (%s×) | %s | %s (%s) | %s |\n' "$(label "$ph")" "$answered" "$PROMPTS" \
            "$p95" "$o95" "$x" "$k95" "$(times_of "$k95" "$o95")" "$rpa" "$random" "$src" "$verdict"
    done
}

# The simulation against the measured baseline (is the simulated fleet the real one?).
simulated() {
    local suffix o_ans o50 o95 r_ans r50 r95 measured
    echo "| phase | clairvoyant client: answered, median / p95 | random, simulated: answered, median / p95 | random, measured: answered, median / p95 |"
    echo "|---|---:|---:|---:|"
    for suffix in seq par rate; do
        read -r o_ans o50 o95 r_ans r50 r95 <<< "$(oracle_of "$suffix")"
        measured=-
        if [[ " $PHASES " == *" base-$suffix "* ]]; then
            read -r answered median p95 _ <<< "$(phase_stats "base-$suffix")"
            measured="$answered/$PROMPTS, $median / $p95 ms"
        fi
        printf '| %s | %s/%s, %.0f / %.0f ms | %s/%s, %.0f / %.0f ms | %s |\n' "$(label "base-$suffix" | sed 's/^random model + curl, //')" \
            "$o_ans" "$PROMPTS" "$o50" "$o95" "$r_ans" "$PROMPTS" "$r50" "$r95" "$measured"
    done
}

# FLEET_SUMMARY: one TSV line per phase run and per simulated clairvoyant phase.
if [[ -n $SUMMARY ]]; then
    if [[ ! -s $SUMMARY ]]; then
        printf 'profile\tseed\tprompts\tphase\tanswered\tmedian_ms\tp95_ms\toracle_p95_ms\tp95_x_oracle\trequests_per_answer\tsuccess_ge_random\tbuild\n' > "$SUMMARY"
    fi
    for suffix in seq par rate; do
        read -r o_ans o50 o95 _ <<< "$(oracle_of "$suffix")"
        printf '%s\t%s\t%s\toracle-%s\t%s\t%.0f\t%.0f\t%.0f\t1.00\t1.00\t-\t-\n' "$PROFILE" "$SEED" "$PROMPTS" "$suffix" "$o_ans" "$o50" "$o95" "$o95" >> "$SUMMARY"
        read -r k_ans k50 k95 <<< "$(informed_of "$suffix")"
        printf '%s\t%s\t%s\tinformed-%s\t%s\t%.0f\t%.0f\t%.0f\t%s\t-\t-\t-\n' "$PROFILE" "$SEED" "$PROMPTS" "$suffix" "$k_ans" "$k50" "$k95" "$o95" \
            "$(times_of "$k95" "$o95")" >> "$SUMMARY"
    done
    for ph in $PHASES; do
        read -r answered median p95 reqs <<< "$(phase_stats "$ph")"
        read -r _ _ o95 _ <<< "$(oracle_of "${ph#*-}")"
        read -r x rpa random _ _ <<< "$(judge "$ph")"
        ge=-
        if [[ $ph != base-* ]]; then if ((answered >= random)); then ge=yes; else ge=no; fi; fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\n' "$PROFILE" "$SEED" "$PROMPTS" "$ph" "$answered" \
            "$median" "$p95" "$o95" "$x" "$rpa" "$ge" "$REV" >> "$SUMMARY"
    done
    log "fleet: appended to $SUMMARY"
fi

label() {
    case $1 in
        base-seq) echo "random model + curl, sequential" ;;
        base-par) echo "random model + curl, \`xargs -P $PARALLEL\`" ;;
        base-rate) echo "random model + curl, $RATE prompts/s" ;;
        fr-seq) echo "freeroute, sequential" ;;
        fr-par) echo "freeroute, \`xargs -P $PARALLEL\`" ;;
        fr-rate) echo "freeroute, $RATE prompts/s" ;;
        frx-seq) echo "freeroute, clock ×$CLOCK_X, sequential" ;;
        frx-par) echo "freeroute, clock ×$CLOCK_X, \`xargs -P $PARALLEL\`" ;;
        frx-rate) echo "freeroute, clock ×$CLOCK_X, $RATE prompts/s" ;;
    esac
}

# summary NAME: one Markdown table row.
summary() {
    local dir=$TMP/$1 rows=$TMP/$1/rows.tsv answered reqs wasted ans_ms all_ms sizes
    answered=$(awk -F'\t' '$3 == 1' "$rows" | wc -l)
    reqs=$(jq '[.models[].requests] | add' "$dir/server.json")
    wasted=$(awk -F'\t' '{s += $6} END {print s + 0}' "$rows")
    ans_ms=$(awk -F'\t' '$3 == 1 {print $2}' "$rows" | pct)
    all_ms=$(awk -F'\t' '{print $2}' "$rows" | pct)
    sizes=$(awk -F'\t' '$3 == 1 {print $4}' "$rows" | size_of | sort -n |
        awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)] "B"; else print "-"}')
    read -r am ap <<< "$ans_ms"
    read -r wm wp <<< "$all_ms"
    printf '| %s | %s/%s (%.1f%%) | %s ms | **%s ms** | %s / %s ms | %s | %s | %.2f | %s | %.0f s |\n' \
        "$(label "$1")" "$answered" "$PROMPTS" "$(awk -v a="$answered" -v n="$PROMPTS" 'BEGIN {print 100 * a / n}')" \
        "$am" "$ap" "$wm" "$wp" "$wasted" "$reqs" "$(awk -v r="$reqs" -v a="$answered" 'BEGIN {print (a ? r / a : 0)}')" \
        "$sizes" "$(awk -v w="$(cat "$dir/wall_ms")" 'BEGIN {print w / 1000}')"
}

# verdicts: the issue's target, freeroute against the baseline run the same way: more
# prompts answered, and a p95 (over answered prompts) at most half the baseline's.
verdicts() {
    local fr base a_fr a_base p_fr p_base
    echo "| freeroute run | baseline | answered | p95 | target met |"
    echo "|---|---|---:|---:|---|"
    for fr in $PHASES; do
        [[ $fr == fr* ]] || continue
        base=base-${fr#*-}
        [[ " $PHASES " == *" $base "* ]] || continue
        a_fr=$(awk -F'\t' '$3 == 1' "$TMP/$fr/rows.tsv" | wc -l)
        a_base=$(awk -F'\t' '$3 == 1' "$TMP/$base/rows.tsv" | wc -l)
        p_fr=$(awk -F'\t' '$3 == 1 {print $2}' "$TMP/$fr/rows.tsv" | pct | cut -d' ' -f2)
        p_base=$(awk -F'\t' '$3 == 1 {print $2}' "$TMP/$base/rows.tsv" | pct | cut -d' ' -f2)
        printf '| %s | %s | %s vs %s | %s vs %s ms (%s) | %s |\n' "$(label "$fr")" "$(label "$base")" \
            "$a_fr" "$a_base" "$p_fr" "$p_base" \
            "$(awk -v a="$p_fr" -v b="$p_base" 'BEGIN {if (b > 0) printf "%.2fx the baseline'"'"'s", a / b; else print "-"}')" \
            "$(awk -v af="$a_fr" -v ab="$a_base" -v pf="$p_fr" -v pb="$p_base" 'BEGIN {
                s = (af > ab) ? "higher success: yes" : "higher success: **no**"
                p = (pf > 0 && 2 * pf <= pb) ? "p95 2x lower: yes" : "p95 2x lower: **no**"
                print s "; " p}')"
    done
}

# outcomes NAME: the wasted attempts by outcome, "n outcome, ...".
outcomes() {
    awk -F'\t' '{n = split($7, o, ","); for (k = 1; k <= n; k++) if (o[k] != "ok") c[o[k]]++}
        END {for (k in c) print c[k] "\t" k}' "$TMP/$1/rows.tsv" | sort -rn |
        awk -F'\t' '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}'
    echo
}

# blocks NAME: answered and p95 per block of 100 prompts (does it learn?).
blocks() {
    local rows=$TMP/$1/rows.tsv b out=
    for ((b = 0; b * 100 < PROMPTS; b++)); do
        local ok p95
        ok=$(awk -F'\t' -v lo=$((b * 100 + 1)) -v hi=$((b * 100 + 100)) '$1 >= lo && $1 <= hi && $3 == 1' "$rows" | wc -l)
        p95=$(awk -F'\t' -v lo=$((b * 100 + 1)) -v hi=$((b * 100 + 100)) '$1 >= lo && $1 <= hi && $3 == 1 {print $2}' "$rows" | pct | cut -d' ' -f2)
        out+="${out:+; }$((b * 100 + 1))–$((b * 100 + 100)): $ok answered, p95 $p95 ms"
    done
    echo "$out"
}

# per_model: requests/answers per model and phase, from the server's counters.
per_model() {
    local ph
    printf '| model |'
    for ph in $PHASES; do printf ' %s |' "$ph"; done
    printf '\n|---|'
    for ph in $PHASES; do printf -- '---:|'; done
    printf '\n'
    local files=()
    for ph in $PHASES; do files+=("$TMP/$ph/server.json"); done
    jq -r '.models | keys[]' "${files[@]}" | sort -u | while read -r m; do
        # shellcheck disable=SC2016 # backticks: Markdown
        printf '| `%s` |' "$m"
        for ph in $PHASES; do
            local req ans fails
            req=$(jq -r --arg m "$m" '.models[$m].requests // 0' "$TMP/$ph/server.json")
            ans=$(awk -F'\t' -v m="$m" '$3 == 1 && $4 == m' "$TMP/$ph/rows.tsv" | wc -l)
            fails=$(jq -r --arg m "$m" '.models[$m] // {} | to_entries | map(select(.key != "requests" and .key != "answer" and .value > 0)) | map("\(.value) \(.key)") | join(", ")' "$TMP/$ph/server.json")
            printf ' %s / %s%s |' "$req" "$ans" "${fails:+ ($fails)}"
        done
        printf '\n'
    done
}

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2> /dev/null || true)
NOTES=
if [[ -f $REPORT ]]; then NOTES=$(sed -n '/^<!-- notes /,$p' "$REPORT"); fi
{
    echo "# Fleet simulation ($PROFILE profile): freeroute vs a random free model and the clairvoyant client"
    echo
    echo "Generated by \`bench/fleet.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    echo "- Machine: $(nproc) CPUs, ${CPU:-unknown}; load average before: $LOAD_BEFORE; after: $LOAD_AFTER"
    echo "- freeroute: release build of $REV${SRC_REV:+ (src/ as of $SRC_REV)}${FR_ARGS:+; extra arguments \`$FR_ARGS\`}"
    echo "- $PROMPTS prompts per phase; timeout $TIMEOUT s for both clients (\`--timeout $TIMEOUT\`, \`curl --max-time $TIMEOUT\`); fleet profile \`$PROFILE\`, seed $SEED; phases: $PHASES"
    echo "- Server: \`examples/fake_fleet.rs\` on 127.0.0.1, a fresh one per phase (quotas and outages start from the same clock); every request's fate is drawn from a PRNG seeded by the seed, the model and the prompt, so a prompt sent to a model meets the same fate in every phase."
    echo "- freeroute: \`freeroute --json -q --timeout $TIMEOUT\` with \`FREEROUTE_SEED\` = the prompt number, a sealed environment, the fleet as a custom provider (\`[providers.fleet]\`, loopback, no key), \`FREEROUTE_DISCOVER=0 FREEROUTE_KEYLESS=0\`, one state dir shared by the $PROMPTS runs of a phase (fresh per phase), catalog cache filled by an untimed \`freeroute models\`."
    if [[ " $PHASES " == *" frx-"* ]]; then
        echo "- Clock ×$CLOCK_X (phases frx-*): the same freeroute runs with \`FREEROUTE_NOW_MS\` set per run to a clock running $CLOCK_X times faster than the wall clock since the phase began (and \`FREEROUTE_CLOCK_RATE\`, so that it keeps that pace during a run and a wait for a cool-down lasts 1/$CLOCK_X of its span), so that its memory (cool-downs, decay, quota windows) ages on the fleet's time scale (latencies about ten times shorter than real ones); the fleet's quota 429s then say \`Retry-After\` in seconds of that clock (×$CLOCK_X). Per-attempt timers (first-token limits, \`--timeout\`) still run on the real clock."
    fi
    echo "- Baseline: a random model from the catalog's free models per prompt (awk \`srand($SEED)\`), one streamed request with \`curl -sN\`, no fallback: what \`openrouter/free\` does."
    echo "- Answered: freeroute \`ok\` with the whole text; curl: HTTP 200, a \`stop\` finish, \`[DONE]\` and no error chunk. Times are wall-clock per prompt, process start to exit."
    echo
    echo "| run | answered | median | p95 | median / p95, all prompts | wasted requests | requests sent | requests per answer | answering model (median size) | wall |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for ph in $PHASES; do summary "$ph"; done
    echo
    echo "- median, p95: time to an answer, over answered prompts. \"All prompts\": time until the client exits, answer or not."
    echo "- wasted requests: requests that did not produce the answer (freeroute: attempts not \`ok\`, from \`--json\`; curl: failed prompts). Requests sent: counted by the server."
    echo
    echo "Against the clairvoyant client (issue 18's goal: freeroute's p95 within 2x the clairvoyant client's in every phase, its success no lower than the random baseline's, requests per answer reported). The clairvoyant client is simulated by \`bench/fleet_oracle.py\` on the same profile, seed and prompts, from the fleet's exact fates (\`fake_fleet --fates $PROFILE $SEED $PROMPTS\`) and its quotas and outages: it sends each prompt where a complete answer comes soonest, waiting for a quota slot only when that is sooner, and never sends a request that will fail; each run costs it 4 ms of start-up. It keeps no memory, so its figures stand for the wall clock (fr-*) and the fleet's clock (frx-*) alike. The informed client, simulated beside it, has no foresight but a perfect memory: it knows each model's distribution (from the fates of all the prompts, not the one at hand), every quota count and outage as they are, ranks models by expected time to an answer with no size prior, and starts the next one beside a late one at freeroute's patience: what freeroute's choices could reach if its memory knew everything."
    echo
    against_oracle
    echo
    echo "The simulation beside the measured baseline (the same random draw when a base phase ran):"
    echo
    simulated
    echo
    echo "Issue 7's target: more prompts answered than the random baseline, and a p95 at least 2x lower (at most 0.50x the baseline's)."
    echo
    verdicts
    echo
    echo "Wasted attempts by outcome:"
    echo
    for ph in $PHASES; do echo "- $(label "$ph"): $(outcomes "$ph")"; done
    echo
    for ph in $PHASES; do
        if [[ $ph == fr* ]]; then echo "- $(label "$ph"), per 100 prompts: $(blocks "$ph")"; fi
    done
    echo
    echo "Per model, requests / answers (and the server's failures) per phase:"
    echo
    per_model
    echo
    echo "The fleet (\`cargo run --release --example fake_fleet -- --describe $PROFILE\`):"
    echo
    "$FLEET" --describe "$PROFILE"
    if [[ -n $NOTES ]]; then
        echo
        echo "$NOTES"
    fi
} > "$REPORT.tmp"
mv "$REPORT.tmp" "$REPORT"
log "fleet: wrote $REPORT"
sed -n '/^| run | answered | median /,/^$/p' "$REPORT" >&2
sed -n '/^Against the clairvoyant/,/^Issue 7/p' "$REPORT" >&2
