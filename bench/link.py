#!/usr/bin/env python3
"""Latency over a link (issue 18): freeroute and curl side by side through a delaying TCP
proxy on loopback (the kernel here has no netem), as multiples of the round trip.

    python3 bench/link.py            # builds the release binaries, measures, prints a table

Each proxy adds LINK_DELAY_MS (25) each way, holds a new connection's first bytes for one
round trip (the TCP handshake a real link costs), and passes LINK_MBIT (50) Mbit/s each way.
Two fake providers (examples/fake_openrouter.rs) stand behind two proxies: `openrouter`
and `second` (an OpenAI-compatible provider with its own key). Plain http: the handshake
of TLS is not modelled (it adds one round trip to every new connection, for curl as well).

Cases (RUNS runs each, medians; state wiped before every run so no cool-down carries over):
  warm       a 20-token answer, catalogs cached
  stale      the same with both catalogs past their TTL (answered first, refreshed after)
  cold -m    no cache at all, `-m` one model (asked first, catalogs learned after), with
             one provider and with two
  cold       no cache, no -m, one provider: the catalog first (1 MB, gzipped)
  429x1 / 429x3   fail-over through one / three upstream 429s at one provider
  cross      one 429 at openrouter, then the answer at `second` (with and without
             `[network] preconnect`)
"Answer" is when a reader of stdout sees its end; "exit" when the process has exited.
curl sends the same requests (one invocation, `--next`, for those on one connection; one
after the other for the cross-provider case). Nothing leaves 127.0.0.1.
"""

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DELAY = float(os.environ.get("LINK_DELAY_MS", "25")) / 1000
RATE = float(os.environ.get("LINK_MBIT", "50")) * 1e6 / 8
RUNS = int(os.environ.get("RUNS", "15"))
PAD = int(os.environ.get("FAKE_CATALOG_PAD", "1000"))
RTT = 2 * DELAY
KEY = "sk-or-v1-bench-0123456789abcdef0123456789abcdef"
SIZES = {}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---- the delaying proxy -------------------------------------------------------------
class Link:
    """127.0.0.1:port -> 127.0.0.1:target with DELAY each way and RATE bytes/s."""

    def __init__(self, loop, target):
        self.loop, self.target = loop, target
        self.connections = 0
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.handle, "127.0.0.1", 0), loop
        )
        self.server = fut.result()
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle(self, reader, writer):
        self.connections += 1
        # The handshake: nothing reaches the other side before one round trip.
        ready = self.loop.time() + RTT
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self.pump(reader, up_w, ready), self.pump(up_r, writer, ready)
        )

    async def pump(self, r, w, not_before):
        q = asyncio.Queue()

        async def read():
            while True:
                try:
                    data = await r.read(65536)
                except OSError:
                    data = b""
                q.put_nowait((self.loop.time(), data))
                if not data:
                    return

        async def write():
            free_at = 0.0
            while True:
                t, data = await q.get()
                start = max(max(t, not_before) + DELAY, free_at)
                free_at = start + len(data) / RATE
                await asyncio.sleep(max(0.0, free_at - self.loop.time()))
                try:
                    if not data:
                        w.close()
                        return
                    w.write(data)
                    await w.drain()
                except OSError:
                    return

        await asyncio.gather(read(), write())


def start_loop():
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return loop


# ---- processes ------------------------------------------------------------------------
def build():
    log("link: cargo build --release (freeroute, fake_openrouter)")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--example", "fake_openrouter"],
        cwd=ROOT,
        check=True,
    )
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return (
        os.path.join(target, "release", "freeroute"),
        os.path.join(target, "release", "examples", "fake_openrouter"),
    )


def start_fake(fake):
    p = subprocess.Popen(
        [fake, "0", "1800"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={"PATH": os.environ["PATH"], "FAKE_CATALOG_PAD": str(PAD)},
    )
    port = int(p.stdout.readline())
    return p, port


def timed(cmd, env, stdin=None):
    """(seconds until stdout's end, seconds until exit, stdout, exit code)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out = p.stdout.read()
    t_end = time.perf_counter() - t0
    err = p.stderr.read()
    code = p.wait()
    t_exit = time.perf_counter() - t0
    if code != 0:
        log(f"link: {cmd} exit {code}: {err.decode(errors='replace')[-600:]}")
    return t_end, t_exit, out, code


def main():
    fr, fake = build()
    loop = start_loop()
    fa, pa = start_fake(fake)
    fb, pb = start_fake(fake)
    la, lb = Link(loop, pa), Link(loop, pb)
    home = tempfile.mkdtemp(prefix="freeroute-link.")
    base_a = f"http://127.0.0.1:{la.port}/api/v1"
    base_b = f"http://127.0.0.1:{lb.port}/api/v1"
    config = os.path.join(home, "config.toml")
    config_np = os.path.join(home, "config-nopreconnect.toml")
    text = (
        f'[providers.openrouter]\nbase_url = "{base_a}"\n'
        f'[providers.second]\nbase_url = "{base_b}"\napi_key_env = "SECOND_KEY"\n'
    )
    open(config, "w").write(text)
    # The cold cases with the one provider a new user has.
    config_one = os.path.join(home, "config-one.toml")
    open(config_one, "w").write(f'[providers.openrouter]\nbase_url = "{base_a}"\n')
    open(config_np, "w").write(text + "[network]\npreconnect = false\n")
    cache = os.path.join(home, "cache")
    state = os.path.join(home, "state")

    def env(cfg=config, extra=None):
        e = {
            "PATH": os.environ["PATH"],
            "HOME": home,
            "XDG_CONFIG_HOME": os.path.join(home, "cfg"),
            "XDG_CACHE_HOME": cache,
            "XDG_STATE_HOME": state,
            "FREEROUTE_CONFIG": cfg,
            "FREEROUTE_DISCOVER": "0",
            "FREEROUTE_KEYLESS": "0",
            "OPENROUTER_API_KEY": KEY,
            "SECOND_KEY": KEY,
            "NO_COLOR": "1",
        }
        e.update(extra or {})
        return e

    def body(model):
        return json.dumps(
            {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        )

    def curl_chat(base, model, first=True):
        a = [] if first else ["--next"]
        return a + [
            "-sS", "-N", "-o", "/dev/null",
            "-H", f"Authorization: Bearer {KEY}",
            "-H", "Content-Type: application/json",
            "-d", body(model),
            f"{base}/chat/completions",
        ]

    short, busy = "bench/short:free", ["bench/busy-1:free", "bench/busy-2:free", "bench/busy-3:free"]
    results = {}

    def measure(name, cmd, before=None, cfg=config, extra=None):
        ends, exits = [], []
        for _ in range(RUNS):
            shutil.rmtree(state, ignore_errors=True)
            if before:
                before()
            t_end, t_exit, _, code = timed(cmd, env(cfg, extra))
            if code == 0:
                ends.append(t_end)
                exits.append(t_exit)
        results[name] = (
            statistics.median(ends) if ends else float("nan"),
            statistics.median(exits) if exits else float("nan"),
            len(ends),
        )
        e, x, n = results[name]
        log(f"link: {name:28} answer {e*1000:7.1f} ms ({e/RTT:4.2f} RTT)  exit {x*1000:7.1f} ms  ({n}/{RUNS} ok)")

    def no_cache():
        shutil.rmtree(cache, ignore_errors=True)

    def warm():
        timed([fr, "-q", "-m", short, "hi"], env())
        timed([fr, "-q", "-p", "second", "-m", short, "hi"], env())

    warm()
    later = str(int(time.time() * 1000) + 2 * 3_600_000)
    curl = ["curl"]
    # curl side by side
    measure("curl: one request", curl + curl_chat(base_a, short))
    measure("curl: 2 on one connection", curl + curl_chat(base_a, busy[0]) + curl_chat(base_a, short, False))
    measure(
        "curl: 4 on one connection",
        curl + curl_chat(base_a, busy[0]) + sum((curl_chat(base_a, m, False) for m in busy[1:] + [short]), []),
    )
    measure(
        "curl: A then B",
        ["sh", "-c", " ".join(["'" + c.replace("'", "'\\''") + "'" for c in curl + curl_chat(base_a, busy[0])])
         + " && " + " ".join(["'" + c.replace("'", "'\\''") + "'" for c in curl + curl_chat(base_b, short)])],
    )
    for name, extra in (("plain", []), ("gzip", ["-H", "Accept-Encoding: gzip"])):
        got = subprocess.run(
            curl + ["-sS", "-o", "/dev/null", "-w", "%{size_download}"] + extra + [f"{base_a}/models"],
            capture_output=True, text=True,
        ).stdout
        SIZES[name] = int(got or 0)
    measure("curl: GET /models", curl + ["-sS", "-o", "/dev/null", f"{base_a}/models"])
    measure("curl: GET /models gzipped", curl + ["-sS", "--compressed", "-o", "/dev/null", f"{base_a}/models"])

    q = ["-q"]
    measure("warm", [fr] + q + ["-m", short, "hi"], before=warm)
    # Cached now, asked two hours on: both catalogs are past their TTL.
    measure(
        "stale",
        [fr] + q + ["-m", short, "hi"],
        before=lambda: (no_cache(), warm()),
        extra={"FREEROUTE_NOW_MS": later},
    )
    measure("cold -m", [fr] + q + ["-m", short, "hi"], before=no_cache, cfg=config_one)
    measure("cold -m, two providers", [fr] + q + ["-m", f"openrouter/{short}", "hi"], before=no_cache)
    measure("cold, no -m (catalog first)", [fr] + q + ["--prefer", short, "hi"], before=no_cache, cfg=config_one)
    warm()
    measure("429x1 one provider", [fr] + q + ["-p", "openrouter", "-m", busy[0], "-m", short, "hi"])
    measure(
        "429x3 one provider",
        [fr] + q + ["-p", "openrouter"] + sum((["-m", m] for m in busy), []) + ["-m", short, "hi"],
    )
    cross = [fr] + q + ["-m", f"openrouter/{busy[0]}", "-m", f"second/{short}", "hi"]
    measure("cross-provider", cross)
    measure("cross-provider, no preconnect", cross, cfg=config_np)

    for p in (fa, fb):
        p.stdin.close()
        p.wait(timeout=10)
    shutil.rmtree(home, ignore_errors=True)

    lines = render(results)
    print("\n".join(lines))
    write_section(lines)


PAIRS = {
    "warm": "curl: one request",
    "stale": "curl: one request",
    "cold -m": "curl: one request",
    "cold -m, two providers": "curl: one request",
    "cold, no -m (catalog first)": "curl: one request",
    "429x1 one provider": "curl: 2 on one connection",
    "429x3 one provider": "curl: 4 on one connection",
    "cross-provider": "curl: A then B",
    "cross-provider, no preconnect": "curl: A then B",
}


def render(results):
    rev = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []
    # What the proxy itself adds to a request beyond its two round trips (Python's timers,
    # copies), as curl shows it: "net" figures take it off.
    excess = results["curl: one request"][0] - 2 * RTT
    out = [
        "## Latency over a link",
        "",
        f"Generated by `bench/link.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"(release build of {rev}; load average {' '.join(load)}). A delaying TCP proxy on "
        f"loopback: {DELAY*1000:.0f} ms each way (round trip {RTT*1000:.0f} ms), a new "
        f"connection's first bytes held one round trip (its handshake), {RATE*8/1e6:.0f} Mbit/s "
        f"each way; plain http (no TLS handshake, for curl neither). Medians of {RUNS} runs; "
        f"catalogs of {PAD + 6} models ({SIZES.get('plain', 0):,} bytes, {SIZES.get('gzip', 0):,} "
        f"gzipped). \"answer\": a reader of "
        f"stdout sees its end; \"exit\": the process has exited. \"net\": less the proxy's "
        f"own {excess*1000:.1f} ms (what curl's one request takes beyond its 2 RTT), taken off "
        f"once per case.",
        "",
        "| case | answer | in RTT | net RTT | exit | curl, same requests | vs curl |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (e, x, n) in results.items():
        if name.startswith("curl"):
            continue
        c = results[PAIRS[name]][0]
        out.append(
            f"| {name} | {e*1000:.1f} ms | {e/RTT:.2f} | {(e-excess)/RTT:.2f} | {x*1000:.1f} ms "
            f"| {c*1000:.1f} ms ({c/RTT:.2f} RTT) | {e/c:.2f}× |"
        )
    for name in ("curl: GET /models", "curl: GET /models gzipped"):
        e = results[name][0]
        out.append(f"| {name} | {e*1000:.1f} ms | {e/RTT:.2f} | {(e-excess)/RTT:.2f} | | | |")
    warm = results["warm"][0]
    cold = results["cold -m"][0]
    same = results["429x1 one provider"][0]
    cross = results["cross-provider"][0]
    out += [
        "",
        "Targets (issue 18), net of the proxy's own time:",
        f"- warm ≤ 2.2 RTT: {(warm-excess)/RTT:.2f} ({'met' if (warm-excess)/RTT <= 2.2 else 'missed'}); "
        f"raw {warm/RTT:.2f}, curl {results['curl: one request'][0]/RTT:.2f}",
        f"- cold ≤ 2.3 RTT (`-m`, answered before the catalog is learned): {(cold-excess)/RTT:.2f} "
        f"({'met' if (cold-excess)/RTT <= 2.3 else 'missed'}); raw {cold/RTT:.2f}",
        f"- cross-provider fail-over ≤ same-provider + 0.3 RTT: {cross/RTT:.2f} vs {same/RTT:.2f} + 0.3 "
        f"({'met' if cross <= same + 0.3 * RTT else 'missed'}); without pre-connecting "
        f"{results['cross-provider, no preconnect'][0]/RTT:.2f}",
        "",
        "Notes: the model list gzipped is "
        f"{SIZES.get('gzip', 0) / max(SIZES.get('plain', 1), 1):.0%} of its bytes and saves "
        f"{(results['curl: GET /models'][0] - results['curl: GET /models gzipped'][0])*1000:.0f} ms "
        "on this link (curl's two GETs); freeroute asks for it gzipped (before issue 18 it sent "
        "no `Accept-Encoding`, i.e. the plain figure). \"stale\" and \"cold -m\" answer in a "
        "warm run's time and learn the catalogs after stdout has ended (their \"exit\"). A warm "
        "run with two providers' 1,000-model catalogs cached reads both caches first (a few ms). "
        "Cross-provider: the second provider's connection is opened while the first attempt "
        "runs, so the fail-over costs what one on the same connection does.",
    ]
    return out


def write_section(lines):
    path = os.path.join(ROOT, "bench", "results.md")
    text = open(path).read() if os.path.exists(path) else ""
    section = "\n".join(lines) + "\n"
    at = text.find("## Latency over a link")
    if at < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        # Up to the next section (bench/run.sh keeps everything from this one on).
        end = text.find("\n## ", at + 1)
        rest = text[end + 1 :] if end >= 0 else ""
        text = text[:at] + section + ("\n" + rest if rest else "")
    open(path, "w").write(text)
    log(f"link: wrote the section of {path}")


if __name__ == "__main__":
    main()
