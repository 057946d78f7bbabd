#!/usr/bin/env python3
"""What any client could reach on the fleet with `xargs -P 8`: a discrete-event simulation.

    target/release/examples/fake_fleet --describe | python3 bench/fleet_oracle.py [SEEDS]

Reads the fleet's model table (examples/fake_fleet.rs prints it) and plays 500 prompts
through 8 workers, as bench/fleet.sh's closed loop does, three ways:

- oracle: a client that knows every model's quota window exactly and every prompt's
  latency on every model, and sends each prompt where it will be answered soonest, waiting
  for a quota slot when that is sooner. It never meets a failure: the fleet's pool 429s,
  500s, errors mid-stream, hangs and outages are left out, so it is an optimistic bound.
- nowait: the same oracle, but it waits only when no model has a free slot.
- random: the baseline (a random model; a full quota window is a quick 429 and a dropped
  prompt; p95 over the prompts answered, as in bench/fleet.sh).

Latencies as the fleet draws them: log-normal first token (median, sigma), a slow tail
(x3-10), then the answer's 30 tokens at the model's speed. Each run costs OVERHEAD ms of
start-up (4 ms, about freeroute's). Prints the median and p95 per seed and client.
"""

import heapq
import math
import random
import re
import sys

WINDOW_MS = 5000.0
TOKENS = 30
OVERHEAD_MS = 4.0
WORKERS = 8
PROMPTS = 500


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


def run(fleet, seed, mode):
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
    free = [(0.0, w) for w in range(WORKERS)]
    heapq.heapify(free)
    times = []
    for p in range(PROMPTS):
        t, w = heapq.heappop(free)
        t += OVERHEAD_MS
        for i in range(len(fleet)):
            accepted[i] = in_window(accepted[i], t)
        if mode == "random":
            i = rng.randrange(len(fleet))
            if len(accepted[i]) >= fleet[i][4]:
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
        heapq.heappush(free, (done, w))
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.95)], len(times)


def main():
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    fleet = read_fleet(sys.stdin)
    print("| seed | oracle median / p95 | nowait median / p95 | random answered, median / p95 | oracle p95 / random p95 |")
    print("|---:|---:|---:|---:|---:|")
    for seed in range(1, seeds + 1):
        o50, o95, _ = run(fleet, seed, "oracle")
        n50, n95, _ = run(fleet, seed, "nowait")
        r50, r95, answered = run(fleet, seed, "random")
        print(
            f"| {seed} | {o50:.0f} / {o95:.0f} ms | {n50:.0f} / {n95:.0f} ms | "
            f"{answered}/{PROMPTS}, {r50:.0f} / {r95:.0f} ms | {o95 / r95:.2f}x |"
        )


if __name__ == "__main__":
    main()
