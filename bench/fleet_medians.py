#!/usr/bin/env python3
"""Pools bench/fleet.sh's summary lines by build: per build, profile and phase, the median
of freeroute's p95 over the clairvoyant client's, its range, how many runs are within
issue 18's 2x, the median requests per answer and the answered range.

Two runs of one build differ by up to 2x in some phases (bench/results.md), so a lever is
judged on the pooled runs of several same-hour repetitions, not on one table:

    python3 bench/fleet_medians.py                       # bench/fleet-summary.tsv
    python3 bench/fleet_medians.py /tmp/a.tsv /tmp/b.tsv --builds 43312d0 "jitter 0.1"

A build is the summary's last column (a revision and, for a variant, what it changed);
`--builds` keeps those containing any of the words given. Standard library only.
"""

import argparse
import collections
import signal
import statistics


def main():
    # Quietly cut short when piped into head.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", default=["bench/fleet-summary.tsv"])
    ap.add_argument("--builds", nargs="+", help="keep builds whose label contains one of these")
    ap.add_argument("--phases", default="fr", help="phase prefix (fr: fr-* and frx-*; frx: frx-* only)")
    args = ap.parse_args()

    runs = collections.defaultdict(list)
    for name in args.files:
        with open(name) as f:
            for line in f:
                col = line.rstrip("\n").split("\t")
                if len(col) < 12 or col[0] == "profile" or not col[3].startswith(args.phases):
                    continue
                build = col[11]
                if args.builds and not any(b in build for b in args.builds):
                    continue
                try:
                    runs[(build, col[0], col[3])].append((float(col[8]), float(col[9]), int(col[4])))
                except ValueError:
                    continue

    print("| build | profile | phase | runs | median × clairvoyant | range | within 2× | requests per answer | answered |")
    print("|---|---|---|---:|---:|---|---:|---:|---|")
    for (build, profile, phase), r in sorted(runs.items()):
        x = [a for a, _, _ in r]
        rpa = statistics.median(b for _, b, _ in r)
        answered = [c for _, _, c in r]
        print(
            f"| {build} | {profile} | {phase} | {len(r)} | {statistics.median(x):.2f} | "
            f"{min(x):.2f}–{max(x):.2f} | {sum(v <= 2.0 for v in x)}/{len(x)} | {rpa:.2f} | "
            f"{min(answered)}–{max(answered)} |"
        )


if __name__ == "__main__":
    main()
