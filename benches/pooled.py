"""p99 over every request of every round, and how sure a comparison of two proxies' p99 is.

A run's rounds interleave the targets, so round k of the gateway and round k of nginx shared
the machine's weather. Resampling whole rounds (with replacement, the same rounds for both)
and taking each resample's pooled p99 gives an interval for the difference that keeps that
pairing: if it spans zero, the run cannot tell the two apart.

    python3 benches/pooled.py TRACE_DIR RATE TARGET [OTHER]
"""

import bisect
import os
import random
import sys

QUANTILE = 0.99
RESAMPLES = 1000
# Fixed, so that the same traces always give the same interval.
SEED = 8


def read_latencies(path):
    """The latencies (µs) of one `loadgen --trace` file, sorted."""
    with open(path, encoding="utf-8") as trace:
        return sorted(int(line.split()[1]) for line in trace)


def rounds_of(trace_dir, rate, target):
    """Each round's sorted latencies, in round order, from files named RATE.TARGET.ROUND."""
    prefix = f"{rate}.{target}."
    names = [n for n in os.listdir(trace_dir)
             if n.startswith(prefix) and n[len(prefix):].isdigit()]
    names.sort(key=lambda n: int(n[len(prefix):]))
    return [read_latencies(os.path.join(trace_dir, n)) for n in names]


def pooled_quantile(rounds, picks, q=QUANTILE):
    """The q-quantile of the rounds at `picks` (indices, repeats allowed) taken together: the
    value at rank int(n * q) of their merged sorted latencies, found without merging them."""
    total = sum(len(rounds[i]) for i in picks)
    if total == 0:
        return None
    rank = min(total - 1, int(total * q))
    low = min(rounds[i][0] for i in picks if rounds[i])
    high = max(rounds[i][-1] for i in picks if rounds[i])
    # The smallest value with more than `rank` latencies at or below it.
    while low < high:
        middle = (low + high) // 2
        if sum(bisect.bisect_right(rounds[i], middle) for i in picks) > rank:
            high = middle
        else:
            low = middle + 1
    return low


def compare(ours, theirs, q=QUANTILE, resamples=RESAMPLES, seed=SEED):
    """(pooled q-quantile of ours minus theirs, 5th and 95th percentile of that difference over
    resampled rounds). Rounds pair by position; extra rounds on either side are left out."""
    count = min(len(ours), len(theirs))
    if count == 0:
        return None
    everything = range(count)
    point = pooled_quantile(ours, everything, q) - pooled_quantile(theirs, everything, q)
    rng = random.Random(seed)
    differences = []
    for _ in range(resamples):
        picks = [rng.randrange(count) for _ in everything]
        differences.append(pooled_quantile(ours, picks, q) - pooled_quantile(theirs, picks, q))
    differences.sort()
    return point, differences[resamples // 20], differences[resamples - 1 - resamples // 20]


def main():
    trace_dir, rate, target = sys.argv[1:4]
    ours = rounds_of(trace_dir, rate, target)
    print(f"{target} at {rate}: pooled p99 {pooled_quantile(ours, range(len(ours)))} µs "
          f"over {len(ours)} rounds")
    if len(sys.argv) > 4:
        other = sys.argv[4]
        point, low, high = compare(ours, rounds_of(trace_dir, rate, other))
        print(f"{target} minus {other}: {point:+} µs (90 % interval {low:+} to {high:+})")


if __name__ == "__main__":
    main()
