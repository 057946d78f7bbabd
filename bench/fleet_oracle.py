#!/usr/bin/env python3
"""What a clairvoyant client reaches on the fleet, in each of bench/fleet.sh's phases: a
discrete-event simulation on the fleet's exact fates.

    python3 bench/fleet_oracle.py [--profile base|heavy] [--seeds 1 2 3] [--prompts N]
        [--bin target/release/examples/fake_fleet] [--parallel 8] [--rate 20] [--timeout 10]
        [--assign FILE] [--tsv]

It asks the fleet itself (`fake_fleet --fates PROFILE SEED N`) what chance decides for
every prompt (the text bench/fleet.sh sends) on every model: the fate (answer, hang,
pool 429, 500, error mid-stream) and how long the server takes to send the whole body
(first token and the stream's gaps, as the server sleeps them); and it reads the quotas,
their window and the outages from `fake_fleet --describe PROFILE`. The rest (the quota
windows, the outages) depends on the traffic and the clock, and the simulation plays it as
the server does: a request is counted against its model's quota when it arrives, a model
that has accepted QUOTA requests in the last WINDOW answers 429, a model in an outage
answers 500 (neither counted), with the phase starting when the server does.

Each phase as bench/fleet.sh runs it, the same prompts in the same order: `seq` one at a
time, `par` a closed loop of PARALLEL workers (`xargs -P 8`), `rate` RATE prompts a second
open-loop whatever is in flight. Two clients:

- oracle: knows every fate, every quota window and every outage, and sends each prompt to
  the model where a complete answer comes soonest, waiting for a quota slot (or an
  outage's end) only when that is sooner. It never sends a request that will fail, so it
  spends no quota on failures. Greedy, prompt by prompt in the order they start: a bound
  on what a client can reach, not a global optimum over the whole run.
- nowait (the Markdown table only): the same oracle under DESIGN §3's rule that a run never
  sleeps on a Retry-After while another candidate is available: it waits for a quota slot
  only when no model that would answer has one now.
- random: the baseline, one request to a random model, no fallback; a failure (429, 500,
  error mid-stream, no answer within TIMEOUT) is an unanswered prompt, and its request
  counts against the quota as on the server. `--assign FILE` (lines "PROMPT MODEL", as
  bench/fleet.sh's $TMP/base-*/assign) plays bench/fleet.sh's own draw; otherwise the
  models are drawn with Python's random seeded by the seed.

Every run also costs OVERHEAD_MS (4 ms, about freeroute's start-up), once. Nothing keeps a
memory, so the figures hold for the fleet's clock and the wall clock alike. Percentiles are
nearest-rank over the answered prompts, as bench/fleet.sh's. Prints a Markdown table, or
with --tsv one line per phase and seed:
phase seed prompts oracle_answered oracle_median oracle_p95 random_answered random_median
random_p95.
"""

import argparse
import bisect
import heapq
import math
import os
import random
import re
import subprocess
import sys

OVERHEAD_MS = 4.0
# How long a refused request (429, 500) holds a worker.
REFUSED_MS = 2.0
ANSWERS = ("answer", "hang")


def read_describe(text):
    """The quota window (ms) and, per model in the table's order, (id, quota, outage)."""
    window, models, header = None, [], None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "model":
            header = cells
            col = next(i for i, c in enumerate(cells) if c.startswith("quota per"))
            window = float(re.search(r"([\d.]+) s", cells[col]).group(1)) * 1000
            outage_col = cells.index("outage")
            continue
        if header is None or not cells[0].startswith("`"):
            continue
        outage = None
        m = re.match(r"500s from (\d+) s to (\d+) s of every (\d+) s", cells[outage_col])
        if m:
            start, end, period = map(int, m.groups())
            outage = (start, end - start, period)
        models.append((cells[0].strip("`"), int(cells[col]), outage))
    if not models:
        sys.exit("fleet_oracle: no model table from fake_fleet --describe")
    return window, models


def read_fates(text, ids, prompts):
    """fates[prompt - 1][model index] = (fate, ms until the body ends)."""
    index = {m: i for i, m in enumerate(ids)}
    fates = [[None] * len(ids) for _ in range(prompts)]
    for line in text.splitlines()[1:]:
        p, model, fate, _, done = line.split("\t")
        fates[int(p) - 1][index[model]] = (fate, float(done))
    if any(f is None for row in fates for f in row):
        sys.exit("fleet_oracle: fake_fleet --fates left some prompt or model out")
    return fates


class Model:
    def __init__(self, quota, outage, window):
        self.quota, self.outage, self.window = quota, outage, window
        self.accepted = []  # sorted arrival times (ms) of the requests it accepted

    def down(self, t):
        if self.outage is None:
            return False
        start, length, period = self.outage
        return start <= (int(t // 1000) % period) < start + length

    def outage_end(self, t):
        start, length, period = self.outage
        return (t // 1000 - int(t // 1000) % period + start + length) * 1000

    def forget(self, t):
        """Drops what no window at or after t can hold."""
        k = bisect.bisect_right(self.accepted, t - self.window)
        del self.accepted[:k]

    def _count(self, lo, hi, extra=None):
        """Accepted requests in (lo, hi), plus `extra` if it lies there."""
        n = bisect.bisect_left(self.accepted, hi) - bisect.bisect_right(self.accepted, lo)
        return n + (extra is not None and lo < extra < hi)

    def takes(self, s):
        """Would a request arriving at s be accepted, without any accepted one (a wait
        planned later in time) being refused because of it? The server checks each arrival
        against the requests accepted in the window before it."""
        if self.down(s) or self._count(s - self.window, s) >= self.quota:
            return False
        k = bisect.bisect_left(self.accepted, s)
        for a in self.accepted[k : bisect.bisect_left(self.accepted, s + self.window)]:
            if self._count(a - self.window, a, s) >= self.quota:
                return False
        return True

    def earliest(self, t, limit):
        """The soonest s in [t, limit] at which a request is accepted, or None."""
        cands = {t}
        for a in self.accepted:
            cands.add(a + self.window)
            cands.add(a + 0.001)
        if self.outage is not None:
            s = t
            while s <= limit:
                if self.down(s):
                    cands.add(self.outage_end(s))
                s += 1000
        for s in sorted(c for c in cands if t <= c <= limit):
            if self.takes(s):
                return s
        return None

    def accept(self, s):
        bisect.insort(self.accepted, s)


def play(phase, client, fates, window, models, args, assign, seed):
    """Times to an answer (ms) of the answered prompts, and the answered count."""
    fleet = [Model(q, o, window) for _, q, o in models]
    # Workers of the phase; none in the open loop: prompt p arrives at p / rate.
    workers = {"seq": 1, "par": args.parallel, "rate": None}[phase]
    free = [(0.0, w) for w in range(workers or 0)]
    heapq.heapify(free)
    rng = random.Random(seed)
    timeout = args.timeout * 1000
    times = []
    for p in range(args.prompts):
        arrive = heapq.heappop(free)[0] if workers else p * 1000.0 / args.rate
        t = arrive + OVERHEAD_MS
        for m in fleet:
            m.forget(t)
        limit = arrive + timeout
        if client == "random":
            i = assign[p] if assign else rng.randrange(len(fleet))
            m = fleet[i]
            fate, done_ms = fates[p][i]
            if m.down(t) or m._count(t - window, t + 0.0005) >= m.quota:
                busy_until = t + REFUSED_MS
            else:
                m.accept(t)
                if fate in ANSWERS and t + done_ms <= limit:
                    times.append(done_ms + OVERHEAD_MS)
                    busy_until = t + done_ms
                elif fate in ANSWERS:
                    busy_until = limit
                else:
                    busy_until = t + max(done_ms, REFUSED_MS)
        else:
            best = None
            # nowait: the oracle under DESIGN §3's rule, never waiting for a model's quota
            # while another model would take the request now.
            can_wait = client == "oracle" or not any(
                fates[p][i][0] in ANSWERS and m.earliest(t, t) is not None for i, m in enumerate(fleet)
            )
            for i, m in enumerate(fleet):
                fate, done_ms = fates[p][i]
                if fate not in ANSWERS or t + done_ms > limit:
                    continue
                s = m.earliest(t, limit - done_ms if can_wait else t)
                if s is not None and (best is None or s + done_ms < best[0]):
                    best = (s + done_ms, i, s)
            if best is None:
                busy_until = limit
            else:
                done, i, s = best
                fleet[i].accept(s)
                times.append(done - t + OVERHEAD_MS)
                busy_until = done
        if workers:
            heapq.heappush(free, (busy_until, p))
    return times


def pct(times):
    """Nearest-rank median and p95, as bench/fleet.sh's pct."""
    a = sorted(times)
    if not a:
        return float("nan"), float("nan")
    n = len(a)
    return a[(n + 1) // 2 - 1], a[math.ceil(0.95 * n) - 1]


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="target/release/examples/fake_fleet")
    ap.add_argument("--profile", default=env("FLEET_PROFILE", "base"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[int(env("FLEET_SEED", "1"))])
    ap.add_argument("--prompts", type=int, default=int(env("FLEET_PROMPTS", "500")))
    ap.add_argument("--parallel", type=int, default=int(env("FLEET_PARALLEL", "8")))
    ap.add_argument("--rate", type=float, default=float(env("FLEET_RATE", "20")))
    ap.add_argument("--timeout", type=float, default=float(env("FLEET_TIMEOUT", "10")))
    ap.add_argument("--phases", nargs="+", default=["seq", "par", "rate"])
    ap.add_argument("--assign", help='bench/fleet.sh\'s random draw: lines "PROMPT MODEL"')
    ap.add_argument("--tsv", action="store_true")
    args = ap.parse_args()

    def fleet(*a):
        return subprocess.run([args.bin, *map(str, a)], check=True, capture_output=True, text=True).stdout

    window, models = read_describe(fleet("--describe", args.profile))
    ids = [m[0] for m in models]
    assign = None
    if args.assign:
        by_prompt = dict(line.split() for line in open(args.assign) if line.strip())
        assign = [ids.index(by_prompt[str(p + 1)]) for p in range(args.prompts)]

    if not args.tsv:
        print(f"Profile {args.profile}, {args.prompts} prompts, timeout {args.timeout:g} s.")
        print()
        print(
            "| phase | seed | oracle answered, median / p95 | oracle that never waits while a model is free"
            " (DESIGN §3), median / p95 | random answered, median / p95 | oracle p95 / random p95 |"
        )
        print("|---|---:|---:|---:|---:|---:|")
    label = {"seq": "sequential", "par": f"`xargs -P {args.parallel}`", "rate": f"{args.rate:g} prompts/s"}
    for seed in args.seeds:
        fates = read_fates(fleet("--fates", args.profile, seed, args.prompts), ids, args.prompts)
        for phase in args.phases:
            o = play(phase, "oracle", fates, window, models, args, assign, seed)
            r = play(phase, "random", fates, window, models, args, assign, seed)
            (o50, o95), (r50, r95) = pct(o), pct(r)
            if args.tsv:
                print(f"{phase}\t{seed}\t{args.prompts}\t{len(o)}\t{o50:.1f}\t{o95:.1f}\t{len(r)}\t{r50:.1f}\t{r95:.1f}")
            else:
                n50, n95 = pct(play(phase, "nowait", fates, window, models, args, assign, seed))
                print(
                    f"| {label[phase]} | {seed} | {len(o)}/{args.prompts}, {o50:.0f} / {o95:.0f} ms | "
                    f"{n50:.0f} / {n95:.0f} ms | "
                    f"{len(r)}/{args.prompts}, {r50:.0f} / {r95:.0f} ms | {o95 / r95:.2f}x |"
                )


if __name__ == "__main__":
    main()
