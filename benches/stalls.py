#!/usr/bin/env python3
"""When do the slow requests of a load run happen? Reads `loadgen --trace FILE` output.

    python3 benches/stalls.py TRACE... [--slow-us 350]

Slow requests (latency above --slow-us) whose scheduled send times are within 2 ms of the
previous slow one form one *stall*. Prints per trace: requests, p99, slow requests, stalls,
and the most common gaps between stall starts. A gap that repeats (say every 16 ms) points at
periodic work (a background batch, a timer); scattered gaps at contention for the CPUs.
"""

import argparse
import collections

STALL_GAP_US = 2000


def analyse(path, slow_us):
    rows = []
    with open(path) as trace:
        for line in trace:
            scheduled, latency = line.split()
            rows.append((int(scheduled), int(latency)))
    rows.sort()
    if not rows:
        return f"{path}: empty trace"
    latencies = sorted(latency for _, latency in rows)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    stalls = []
    for scheduled, latency in rows:
        if latency <= slow_us:
            continue
        if stalls and scheduled - stalls[-1][-1][0] < STALL_GAP_US:
            stalls[-1].append((scheduled, latency))
        else:
            stalls.append([(scheduled, latency)])
    slow = sum(len(stall) for stall in stalls)
    starts = [stall[0][0] for stall in stalls]
    # Gaps rounded to the millisecond, so a period shows up as one frequent value.
    gaps = collections.Counter(round((b - a) / 1000) for a, b in zip(starts, starts[1:]))
    common = ", ".join(f"{ms} ms x{count}" for ms, count in gaps.most_common(4))
    worst = max((max(latency for _, latency in stall) for stall in stalls), default=0)
    return (
        f"{path}: {len(rows)} requests, p99 {p99} us; {slow} above {slow_us} us in "
        f"{len(stalls)} stalls (largest {max((len(s) for s in stalls), default=0)} requests, "
        f"worst {worst} us); most common gaps between stalls: {common or '-'}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", nargs="+")
    parser.add_argument("--slow-us", type=int, default=350)
    args = parser.parse_args()
    for path in args.traces:
        print(analyse(path, args.slow_us))


if __name__ == "__main__":
    main()
