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
DEFAULT_SLOW_US = 350


def analyse(path, slow_us=DEFAULT_SLOW_US):
    """The stalls of one trace: a dict with requests, p99_us, slow, stalls, largest, worst_us
    and gaps (a Counter of the gaps between stall starts, in whole ms)."""
    rows = []
    with open(path) as trace:
        for line in trace:
            scheduled, latency = line.split()
            rows.append((int(scheduled), int(latency)))
    rows.sort()
    latencies = sorted(latency for _, latency in rows)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if rows else None
    stalls = []
    for scheduled, latency in rows:
        if latency <= slow_us:
            continue
        if stalls and scheduled - stalls[-1][-1][0] < STALL_GAP_US:
            stalls[-1].append((scheduled, latency))
        else:
            stalls.append([(scheduled, latency)])
    starts = [stall[0][0] for stall in stalls]
    return {
        "requests": len(rows),
        "p99_us": p99,
        "slow": sum(len(stall) for stall in stalls),
        "stalls": len(stalls),
        "largest": max((len(stall) for stall in stalls), default=0),
        "worst_us": max((max(latency for _, latency in stall) for stall in stalls), default=0),
        # Rounded to the millisecond, so a period shows up as one frequent value.
        "gaps": collections.Counter(round((b - a) / 1000) for a, b in zip(starts, starts[1:])),
    }


def describe(path, result, slow_us):
    common = ", ".join(f"{ms} ms x{count}" for ms, count in result["gaps"].most_common(4))
    return (
        f"{path}: {result['requests']} requests, p99 {result['p99_us']} us; {result['slow']} "
        f"above {slow_us} us in {result['stalls']} stalls (largest {result['largest']} "
        f"requests, worst {result['worst_us']} us); most common gaps between stalls: "
        f"{common or '-'}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", nargs="+")
    parser.add_argument("--slow-us", type=int, default=DEFAULT_SLOW_US)
    args = parser.parse_args()
    for path in args.traces:
        print(describe(path, analyse(path, args.slow_us), args.slow_us))


if __name__ == "__main__":
    main()
