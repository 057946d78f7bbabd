#!/usr/bin/env python3
"""What a clairvoyant client reaches on the fleet, in each of bench/fleet.sh's phases: a
discrete-event simulation on the fleet's exact fates.

    python3 bench/fleet_oracle.py [--profile base|heavy] [--seeds 1 2 3] [--prompts N]
        [--bin target/release/examples/fake_fleet] [--parallel 8] [--rate 20] [--timeout 10]
        [--assign FILE] [--tsv] [--size-prior]

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
open-loop whatever is in flight. The clients:

- oracle: knows every fate, every quota window and every outage, and sends each prompt to
  the model where a complete answer comes soonest, waiting for a quota slot (or an
  outage's end) only when that is sooner. It never sends a request that will fail, so it
  spends no quota on failures. Greedy, prompt by prompt in the order they start: a bound
  on what a client can reach, not a global optimum over the whole run.
- nowait (the Markdown table only): the same oracle under DESIGN §3's rule that a run never
  sleeps on a Retry-After while another candidate is available: it waits for a quota slot
  only when no model that would answer has one now.
- informed: a client with no foresight but perfect memory, what freeroute's design could
  reach if it knew everything a memory can know: each model's distribution (first token,
  time to the end, chance of each failure: from the fates of all the run's prompts, never
  the one at hand), every quota count and outage as they are now. It tries models in the
  order of their expected time to an answer (the next model started beside one without a
  first token at its patience, freeroute's rule: 1.5 times its p90 first token, at most
  2.5 times its median), sends only where the quota has room, takes the first attempt to
  send a first token, goes on to the next at once after a failure, and waits for a quota
  slot only when no model has one. No size prior (every answer is worth the same here),
  unless --size-prior: then it ranks as freeroute's prior and latency terms do.
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
random_p95 informed_answered informed_median informed_p95.
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
    """fates[prompt - 1][model index] = (fate, ms until the body ends, ms until the first
    token or None)."""
    index = {m: i for i, m in enumerate(ids)}
    fates = [[None] * len(ids) for _ in range(prompts)]
    for line in text.splitlines()[1:]:
        p, model, fate, first, done = line.split("\t")
        fates[int(p) - 1][index[model]] = (fate, float(done), None if first == "-" else float(first))
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


class Informed:
    """What the informed client knows: each model's distribution (from the fates of every
    prompt, not the prompt at hand) and, as `Model`, its quota count and outage now."""

    # src/plan/mod.rs's PATIENCE_QUANTILE, PATIENCE_MULT and PATIENCE_MEDIAN_MULT.
    PATIENCE_QUANTILE, PATIENCE_MULT, PATIENCE_MEDIAN_MULT = 0.9, 1.5, 2.5

    def __init__(self, fates, sizes=None):
        n = len(fates[0])
        rows = [[fates[p][i] for p in range(len(fates))] for i in range(n)]
        self.patience, done_median = [], []
        for r in rows:
            first = sorted(f[2] for f in r if f[0] in ANSWERS)
            self.patience.append(
                min(
                    quantile(first, self.PATIENCE_QUANTILE) * self.PATIENCE_MULT,
                    quantile(first, 0.5) * self.PATIENCE_MEDIAN_MULT,
                )
            )
            done_median.append(quantile(sorted(f[1] for f in r if f[0] in ANSWERS), 0.5))
        ref = min(done_median)
        self.expected = []
        for i, r in enumerate(rows):
            # The mean time to an answer if the next model is started beside it at its
            # patience (and answers in the fastest model's median time), or after a failure.
            cost = [
                min(f[1], self.patience[i] + ref) if f[0] in ANSWERS else max(f[1], REFUSED_MS) + ref for f in r
            ]
            self.expected.append(sum(cost) / len(cost))
        self.order = sorted(range(n), key=lambda i: self.expected[i])
        if sizes:
            # freeroute's size prior (1B 0, 1000B 1, on a log scale) against its latency
            # term (0.5 lost per doubling of the time over the fastest's).
            best = min(self.expected)
            score = [math.log10(max(1.0, b)) / 3 - 0.5 * math.log2(e / best) for b, e in zip(sizes, self.expected)]
            self.order = sorted(range(n), key=lambda i: -score[i])


def informed_prompt(p, t, limit, fleet, fates, know):
    """One prompt of the informed client from t: (the answer's time or None, when its
    worker is free). It tries models in the order of their expected time, only where the
    quota has room and no outage is on (it knows the counts and the outages, never a
    prompt's fate), starts the next one beside an attempt without a first token at its
    patience, takes the first to send a first token, and after a failure goes on to the
    next at once; when no model has room it waits for the first that will."""
    tried, active = set(), []

    def launch(now):
        pick = next((i for i in know.order if i not in tried and fleet[i].takes(now)), None)
        s = now
        if pick is None:
            best = None
            for i in know.order:
                if i in tried:
                    continue
                e = fleet[i].earliest(now, limit)
                if e is not None and (best is None or e + know.expected[i] < best[0]):
                    best = (e + know.expected[i], i, e)
            if best is None:
                return
            _, pick, s = best
        tried.add(pick)
        fleet[pick].accept(s)
        fate, done, first = fates[p][pick]
        active.append({"i": pick, "s": s, "fate": fate, "done": done, "first": first, "beside": False})

    launch(t)
    while active:
        events = []
        for a in active:
            if a["fate"] in ANSWERS or a["fate"] == "mid_stream":
                events.append((a["s"] + a["first"], 0, "token", a))
                if not a["beside"] and a["first"] > know.patience[a["i"]]:
                    events.append((a["s"] + know.patience[a["i"]], 1, "patience", a))
            else:
                events.append((a["s"] + max(a["done"], REFUSED_MS), 2, "fail", a))
        now, _, kind, a = min(events, key=lambda e: (e[0], e[1]))
        if now > limit:
            return None, limit
        if kind == "token":
            # The first token wins: the others are dropped.
            active[:] = [a]
            if a["fate"] in ANSWERS:
                end = a["s"] + a["done"]
                return (end, end) if end <= limit else (None, limit)
            # An error mid-stream: the stream fails at its end, the others are gone.
            a["fate"] = "failing"
            continue
        if kind == "patience":
            a["beside"] = True
            launch(now)
            continue
        active.remove(a)
        if not active:
            launch(now)
    return None, limit


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
    know = None
    if client == "informed":
        sizes = [float(re.search(r"-([\d.]+)b", m[0]).group(1)) for m in models] if args.size_prior else None
        know = Informed(fates, sizes)
    for p in range(args.prompts):
        arrive = heapq.heappop(free)[0] if workers else p * 1000.0 / args.rate
        t = arrive + OVERHEAD_MS
        for m in fleet:
            m.forget(t)
        limit = arrive + timeout
        if client == "informed":
            done, busy_until = informed_prompt(p, t, limit, fleet, fates, know)
            if done is not None:
                times.append(done - t + OVERHEAD_MS)
        elif client == "random":
            i = assign[p] if assign else rng.randrange(len(fleet))
            m = fleet[i]
            fate, done_ms, _ = fates[p][i]
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
                fate, done_ms, _ = fates[p][i]
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


def quantile(a, x):
    """The nearest-rank quantile x (0..1) of the sorted, non-empty list a."""
    return a[min(len(a), max(1, math.ceil(x * len(a)))) - 1]


def pct(times):
    """Nearest-rank median and p95, as bench/fleet.sh's pct."""
    a = sorted(times)
    if not a:
        return float("nan"), float("nan")
    return quantile(a, 0.5), quantile(a, 0.95)


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
    ap.add_argument(
        "--size-prior", action="store_true", help="the informed client ranks with freeroute's size prior, not by time alone"
    )
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
            " (DESIGN §3), median / p95 | informed, no foresight: answered, median / p95, × oracle |"
            " random answered, median / p95 | oracle p95 / random p95 |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
    label = {"seq": "sequential", "par": f"`xargs -P {args.parallel}`", "rate": f"{args.rate:g} prompts/s"}
    for seed in args.seeds:
        fates = read_fates(fleet("--fates", args.profile, seed, args.prompts), ids, args.prompts)
        for phase in args.phases:
            o = play(phase, "oracle", fates, window, models, args, assign, seed)
            r = play(phase, "random", fates, window, models, args, assign, seed)
            (o50, o95), (r50, r95) = pct(o), pct(r)
            k = play(phase, "informed", fates, window, models, args, assign, seed)
            k50, k95 = pct(k)
            if args.tsv:
                print(
                    f"{phase}\t{seed}\t{args.prompts}\t{len(o)}\t{o50:.1f}\t{o95:.1f}\t{len(r)}\t{r50:.1f}\t{r95:.1f}"
                    f"\t{len(k)}\t{k50:.1f}\t{k95:.1f}"
                )
            else:
                n50, n95 = pct(play(phase, "nowait", fates, window, models, args, assign, seed))
                print(
                    f"| {label[phase]} | {seed} | {len(o)}/{args.prompts}, {o50:.0f} / {o95:.0f} ms | "
                    f"{n50:.0f} / {n95:.0f} ms | "
                    f"{len(k)}/{args.prompts}, {k50:.0f} / {k95:.0f} ms, {k95 / o95:.2f}× | "
                    f"{len(r)}/{args.prompts}, {r50:.0f} / {r95:.0f} ms | {o95 / r95:.2f}x |"
                )


if __name__ == "__main__":
    main()
