#!/usr/bin/env python3
"""What any client could reach on the fleet, in each of bench/fleet.sh's phases: a
discrete-event simulation.

    target/release/examples/fake_fleet --describe | python3 bench/fleet_oracle.py [SEEDS]

Reads the fleet's model table (examples/fake_fleet.rs prints it) and plays 500 prompts as
each phase of bench/fleet.sh does: one at a time (`seq`), through 8 workers (`x8`, the
closed loop of `xargs -P 8`) and arriving at 20 a second whatever is in flight (`rate`, the
open loop), three ways:

- oracle: a client that knows every model's quota window exactly and every prompt's
  latency on every model, and sends each prompt where it will be answered soonest, waiting
  for a quota slot when that is sooner. It never meets a failure: the fleet's pool 429s,
  500s, errors mid-stream, hangs and outages are left out, so it is an optimistic bound.
- nowait: the same oracle, but it waits only when no model has a free slot.
- random: the baseline (a random model; a full quota window is a quick 429 and a dropped
  prompt; p95 over the prompts answered, as in bench/fleet.sh).

Latencies as the fleet draws them: log-normal first token (median, sigma), a slow tail
(x3-10), then the answer's 30 tokens at the model's speed. Each run costs OVERHEAD ms of
start-up (4 ms, about freeroute's). Prints the median and p95 per phase, seed and client.
The oracle has no memory to keep, so its figures hold for the fleet's clock and the wall
clock alike.
"""

import heapq
import os
import math
import random
import re
import sys

WINDOW_MS = 5000.0
TOKENS = 30
OVERHEAD_MS = 4.0
PROMPTS = int(os.environ.get("FLEET_PROMPTS", "500"))
RATE_PER_S = 20.0
# Workers of each phase; `rate` has none: each prompt starts when it arrives.
PHASES = {"seq": 1, "x8": 8, "rate": None}


def read_fleet(lines):
    """Rows of the --describe table: (median ms, sigma, tail share, tokens/s, quota)."""
    fleet = []
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 10 or not cells[0].startswith("`"):
            continue
        median = float(cells[1].split()[0])
        sigma = float(cells[2])
        tail = float(re.match(r"([\d.]+)%", cells[3]).group(1)) / 100
        speed = float(cells[5])
        quota = int(cells[9])
        fleet.append((median, sigma, tail, speed, quota))
    if not fleet:
        sys.exit("fleet_oracle: no model table on stdin (pipe `fake_fleet --describe` in)")
    return fleet


def in_window(accepted, t):
    return [a for a in accepted if a > t - WINDOW_MS]


def run(fleet, seed, mode, phase="x8"):
    rng = random.Random(seed)
    latency = [
        [
            m[0] * math.exp(m[1] * rng.gauss(0, 1)) * (rng.uniform(3, 10) if rng.random() < m[2] else 1)
            + TOKENS / m[3] * 1000
            for m in fleet
        ]
        for _ in range(PROMPTS)
    ]
    accepted = [[] for _ in fleet]
    workers = PHASES[phase]
    free = [(0.0, w) for w in range(workers or 0)]
    heapq.heapify(free)
    times = []
    for p in range(PROMPTS):
        if workers:
            t, w = heapq.heappop(free)
        else:
            t, w = p * 1000.0 / RATE_PER_S, None
        t += OVERHEAD_MS
        for i in range(len(fleet)):
            accepted[i] = in_window(accepted[i], t)
        if mode == "random":
            i = rng.randrange(len(fleet))
            if len(accepted[i]) >= fleet[i][4]:
                if workers:
                    heapq.heappush(free, (t + 3, w))
                continue
            accepted[i].append(t)
            done = t + latency[p][i]
        else:
            any_free = any(len(accepted[i]) < m[4] for i, m in enumerate(fleet))
            best = None
            for i, m in enumerate(fleet):
                q = accepted[i]
                start = t if len(q) < m[4] else q[len(q) - m[4]] + WINDOW_MS
                if mode == "nowait" and start > t and any_free:
                    continue
                done = start + latency[p][i]
                if best is None or done < best[0]:
                    best = (done, i, start)
            done, i, start = best
            accepted[i].append(start)
            accepted[i].sort()
        times.append(done - t + OVERHEAD_MS)
        if workers:
            heapq.heappush(free, (done, w))
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.95)], len(times)


def main():
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    fleet = read_fleet(sys.stdin)
    print("| phase | seed | oracle median / p95 | nowait median / p95 | random answered, median / p95 | oracle p95 / random p95 |")
    print("|---|---:|---:|---:|---:|---:|")
    for phase in PHASES:
        for seed in range(1, seeds + 1):
            o50, o95, _ = run(fleet, seed, "oracle", phase)
            n50, n95, _ = run(fleet, seed, "nowait", phase)
            r50, r95, answered = run(fleet, seed, "random", phase)
            print(
                f"| {phase} | {seed} | {o50:.0f} / {o95:.0f} ms | {n50:.0f} / {n95:.0f} ms | "
                f"{answered}/{PROMPTS}, {r50:.0f} / {r95:.0f} ms | {o95 / r95:.2f}x |"
            )


if __name__ == "__main__":
    main()
