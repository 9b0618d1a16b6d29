#!/usr/bin/env python3
"""Turn load.sh's loadgen result lines into the measured block of benches/RESULTS.md.

usage: report.py RESULTS_TXT OUT_MD IDLE_RSS_KB "RATES" SMOKE [TRACE_DIR]

TRACE_DIR holds `loadgen --trace` files named RATE.TARGET.ROUND; with it the report counts the
stalls at each rate (benches/stalls.py).

Only the text between the two marker comments is replaced, so hand-written analysis around it
survives re-runs; a missing file (or one without the markers) gets the block appended.
"""

import collections
import datetime
import os
import platform
import random
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stalls  # noqa: E402 (benches/stalls.py, next to this file)

BEGIN = "<!-- load.sh:begin (generated, do not edit by hand) -->"
END = "<!-- load.sh:end -->"
# `load.sh --pin` writes a block of its own, so a pinned run does not replace the shared one.
PINNED_BEGIN = "<!-- load.sh --pin:begin (generated, do not edit by hand) -->"
PINNED_END = "<!-- load.sh --pin:end -->"


def parse(path):
    """{(mode, rate, target): that cell's rounds merged into one result (see `merge`)}."""
    rounds = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            mode, fields = parts[0], dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            key = (mode, fields.get("target_rps", "max"), fields["label"])
            rounds.setdefault(key, []).append(fields)
    return {key: merge(cell) for key, cell in rounds.items()}


# Per-round figures reported as the median over the rounds.
MEDIAN_FIELDS = ("achieved_rps", "p50_us", "p90_us", "p99_us", "mean_us", "ttfb_p50_us",
                 "ttfb_p99_us")
# Per-round figures that add up over the rounds (warm-up and duration: for CPU per request).
SUMMED_FIELDS = ("ok", "errors", "cpu_ms", "warmup", "duration")


def merge(rounds):
    """One cell's rounds as one result: the median of each latency and rate, the sums of
    requests, errors, CPU time and measured time, the largest max and RSS, and every round's
    p99 (`p99_rounds`) so the spread stays visible."""
    merged = dict(rounds[0])
    for name in MEDIAN_FIELDS:
        values = [v for v in (num(r, name) for r in rounds) if v is not None]
        if values:
            merged[name] = statistics.median(values)
    for name in SUMMED_FIELDS:
        values = [v for v in (num(r, name) for r in rounds) if v is not None]
        if values:
            merged[name] = sum(values)
    for name in ("max_us", "rss_kb"):
        values = [v for v in (num(r, name) for r in rounds) if v is not None]
        if values:
            merged[name] = max(values)
    merged["p99_rounds"] = [num(r, "p99_us") for r in rounds]
    merged["steal_rounds"] = [num(r, "steal_pct") for r in rounds]
    merged["rounds"] = len(rounds)
    return merged


def num(fields, name):
    try:
        return float(fields[name])
    except (KeyError, ValueError, TypeError):
        return None


def us(value):
    return "–" if value is None else f"{value:.0f}"


def added(a, b):
    return "–" if a is None or b is None else f"{b - a:+.0f}"


def cores_busy(fields):
    """CPUs' worth of time the serving process used over the cell's runs (warm-ups included)."""
    cpu_ms, warmup, duration = (num(fields, n) for n in ("cpu_ms", "warmup", "duration"))
    if cpu_ms is None or warmup is None or duration is None or warmup + duration <= 0:
        return None
    return cpu_ms / 1000 / (warmup + duration)


def per_cpu_second(fields):
    """Requests served per second of the serving process's CPU time: its capacity, whether or
    not the client side kept it busy."""
    rps, busy = num(fields, "achieved_rps"), cores_busy(fields)
    return None if rps is None or not busy else rps / busy


# Steal above this in a load run is called out in the report.
STEAL_WARN_PCT = 5.0


def worst_steal(runs):
    """(steal %, cell key, round number) of the load run with the most host steal, or None when
    the results carry no steal figures."""
    worst = None
    for key, fields in runs.items():
        for round_no, pct in enumerate(fields.get("steal_rounds", []), start=1):
            if pct is not None and (worst is None or pct > worst[0]):
                worst = (pct, key, round_no)
    return worst


def count(fields, name):
    value = num(fields, name)
    return "–" if value is None else f"{value:.0f}"


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_rev():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stall_cell(results):
    """Stalls summed over a cell's rounds, plus the most common gap between them when it
    recurs often enough to suggest something periodic."""
    if not results:
        return "–"
    total = sum(r["stalls"] for r in results)
    gaps = collections.Counter()
    for r in results:
        gaps.update(r["gaps"])
    if gaps:
        ms, count = gaps.most_common(1)[0]
        if count >= max(5, total // 10):
            return f"{total} ({ms} ms apart × {count})"
    return str(total)


def stall_table(runs, trace_dir, rates, targets):
    out = ["Stalls: requests slower than twice direct's p50 at that rate (the threshold, µs), one "
           "stall while they come less than 2 ms apart (`benches/stalls.py`), summed over the "
           "rounds. In brackets the most common gap between stalls when it recurs (at least "
           "10 % of the gaps): a regular gap points at periodic work, such as a background batch.",
           "",
           "| rate | threshold | " + " | ".join(targets) + " |",
           "|---|---|" + "---|" * len(targets)]
    for rate in rates.split():
        direct_p50 = num(runs.get(("rate", rate, "direct"), {}), "p50_us")
        # Twice the unloaded path's typical latency: a fixed threshold would count most
        # requests as slow at low rates, where waking up from idle makes every path slower.
        slow_us = round(2 * direct_p50) if direct_p50 else stalls.DEFAULT_SLOW_US
        cells = [rate, str(slow_us)]
        for t in targets:
            paths = sorted(p for p in os.listdir(trace_dir) if p.startswith(f"{rate}.{t}."))
            cells.append(stall_cell([stalls.analyse(os.path.join(trace_dir, p), slow_us)
                                     for p in paths]))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


# Resamples for the interval of the median round-by-round difference; seeded, so that the same
# results always give the same interval.
RESAMPLES = 1000
SEED = 8


def paired_difference(ours, theirs, resamples=RESAMPLES, seed=SEED):
    """Round k of one proxy against round k of another (the targets are interleaved, so the two
    shared the machine's weather): (median of the rounds' differences, 5th and 95th percentile
    of that median over resampled rounds, rounds above, rounds below). A median of rounds
    rather than a p99 of all rounds' requests together: one bad round (a host stall) would
    make the latter, not the former. None without a pair."""
    differences = [a - b for a, b in zip(ours, theirs) if a is not None and b is not None]
    if not differences:
        return None
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choice(differences) for _ in differences)
                     for _ in range(resamples))
    return (statistics.median(differences), medians[resamples // 20],
            medians[resamples - 1 - resamples // 20],
            sum(d > 0 for d in differences), sum(d < 0 for d in differences))


def verdict(difference):
    """How a 90 % interval of (gateway - nginx) reads."""
    _, low, high, _, _ = difference
    if high <= 0:
        return "at or below"
    if low > 0:
        return "above"
    return "not told apart from"


def round_pairs(runs, rate, target):
    """(target's p99, nginx's p99) of each round at `rate` that has both."""
    return [(c, n) for c, n in zip(runs.get(("rate", rate, target), {}).get("p99_rounds", []),
                                   runs.get(("rate", rate, "nginx"), {}).get("p99_rounds", []))
            if c is not None and n is not None]


def round_differences(runs, rates, target):
    """{rate: paired_difference of the target's p99s against nginx's}, where both have rounds."""
    result = {}
    for rate in rates.split():
        pairs = round_pairs(runs, rate, target)
        if pairs:
            result[rate] = paired_difference([c for c, _ in pairs], [n for _, n in pairs])
    return result


def paired_table(per_target, rates):
    """The round-by-round table; `per_target`: {build: round_differences of that build}."""
    out = ["Round by round: each build's p99 minus nginx's in the same round (µs), the median over "
           "the rounds, a 90 % interval of that median from resampling the rounds, and how many "
           "rounds came out above / below nginx's. An interval that spans 0: this run cannot "
           "tell the two apart.",
           "",
           "| rate | " + " | ".join(f"{t} − nginx" for t in per_target) + " |",
           "|---|" + "---|" * len(per_target)]
    for rate in rates.split():
        cells = [rate]
        for differences in per_target.values():
            difference = differences.get(rate)
            if difference is None:
                cells.append("–")
                continue
            median, low, high, above, below = difference
            cells.append(f"{median:+g} ({low:+g} to {high:+g}); {above} / {below}")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def paired_goal(differences):
    """The goal line's second reading, from one build's round_differences: round by round,
    with its uncertainty."""
    if not differences:
        return ""
    verdicts = {rate: verdict(d) for rate, d in differences.items()}
    apart = [f"{rate} ({v})" for rate, v in verdicts.items() if v != "not told apart from"]
    return (" Round by round, told apart from nginx's p99 (90 % interval of the median "
            "difference clear of 0) at: " + (", ".join(apart) if apart else "no rate") + ".")


def goal_line(runs, rates, rounds, target, n_max, differences):
    """Issue 8's two targets for one build of the gateway, against nginx in the same run;
    `differences`: the build's round_differences (empty with one round)."""
    goal_rows = []
    for rate in rates.split():
        get = lambda t: num(runs.get(("rate", rate, t), {}), "p99_us")
        if None not in (get("direct"), get(target), get("nginx")):
            goal_rows.append((rate, get(target) <= get("nginx")))
    p99_ok = all(ok for _, ok in goal_rows) and bool(goal_rows)
    c_max = num(runs.get(("max", "max", target), {}), "achieved_rps")
    ratio_ok = c_max is not None and n_max and c_max / n_max >= 0.8
    # Same round, same rate: the gateway's p99 against nginx's.
    pairs = [pair for rate in rates.split() for pair in round_pairs(runs, rate, target)]
    per_round = (f" (single rounds: {target}'s p99 ≤ nginx's in {sum(c <= n for c, n in pairs)}"
                 f" of {len(pairs)})") if rounds > 1 and pairs else ""
    return (f"**Goal** (issue 8), {target}: added p99 ≤ nginx added p99 at every rate: "
            + ("met" if p99_ok else "not met ("
               + ", ".join(r for r, ok in goal_rows if not ok) + " rps)") + per_round
            + "; max throughput ≥ 80% of nginx's: "
            + ("–" if c_max is None or not n_max else
               f"{c_max / n_max:.0%} ({'met' if ratio_ok else 'not met'})") + "."
            + paired_goal(differences))


def render(runs, idle_rss, rates, smoke, trace_dir=None):
    targets = [t for t in ("direct", "compresh", "compresh-pgo", "compresh-poll", "compresh-hyper",
                           "hyper", "raw", "nginx")
               if any(k[2] == t for k in runs)]
    has_nginx = "nginx" in targets
    out = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out.append(f"Measured {now} on `{platform.node()}`: {os.cpu_count()} CPUs "
               f"({cpu_model()}), Linux {platform.release()}; commit {git_rev()}"
               + (" — **smoke run, numbers meaningless**" if smoke == "1" else "") + ".")
    out.append("")
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            load_end = " ".join(f.read().split()[:3])
    except OSError:
        load_end = "unknown"
    pinning = os.environ.get("PINNING", "")
    load = (f"load average {os.environ.get('LOAD_START', '?')} at the start, {load_end} at the "
            "end")
    if pinning:
        sharing = (f"**Pinned** (`load.sh --pin`): {pinning}. The proxy under test no longer "
                   "competes with the load tool and the mock for a core; its own threads share "
                   f"its half, and anything else running on the machine shares both ({load}).")
    else:
        sharing = ("Load tool, mock provider, gateway and nginx all run on this one machine and "
                   "share its CPUs, so every number includes contention between them (and with "
                   f"anything else running: {load}).")
    out.append(f"{sharing} Latencies in µs; "
               "\"added\" = that path minus direct at the same rate in the same run.")
    out.append("")
    steal = worst_steal(runs)
    if steal is not None:
        pct, (mode, rate, target), round_no = steal
        cell = f"{target} at {rate} rps" if mode == "rate" else f"{target}, {mode}"
        out.append(f"Host steal (CPU time the hypervisor gave to other guests, from `/proc/stat`) "
                   f"was at most {pct:.1f} % in any single load run ({cell}, round {round_no})"
                   + (": numbers from such rounds measure the host, not the proxies."
                      if pct >= STEAL_WARN_PCT else "."))
        out.append("")
    rounds = max((v.get("rounds", 1) for v in runs.values()), default=1)
    if rounds > 1:
        out.append(f"Every cell was measured in {rounds} rounds (the targets interleaved in each "
                   "round); latencies and rates below are the median over the rounds, CPU "
                   "per request is over all of them, and each round's p99 is listed after "
                   "the first table.")
        out.append("")

    out.append("### Fixed rates (open loop, latency from the scheduled send time)")
    out.append("")
    # Other proxies compared with compresh: (target, column label, name in the goal lines).
    floors = [(t, label, noun) for t, label, noun in (
        ("compresh-pgo", "compresh, PGO build", "compresh's profile-guided build (`pgo.sh`)"),
        ("compresh-poll", "compresh, polling", "compresh polling for answers (`--upstream-poll-us`)"),
        ("compresh-hyper", "compresh, hyper path", "compresh on its hyper path (`--no-raw-lane`)"),
        ("hyper", "hyper (floor)", "the hyper floor"),
        ("raw", "raw (floor)", "the raw floor")) if t in targets]
    head = ["rate", "direct p50 / p99", "compresh p50 / p99", "**compresh added p50 / p99**"]
    head += [f"{label} added p50 / p99" for _, label, _ in floors]
    if has_nginx:
        head += ["nginx p50 / p99", "**nginx added p50 / p99**"]
    head += ["achieved rps (d / c" + (" / n)" if has_nginx else ")"), "errors"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for rate in rates.split():
        get = lambda t: runs.get(("rate", rate, t), {})
        d, c, n = get("direct"), get("compresh"), get("nginx")
        row = [rate,
               f"{us(num(d, 'p50_us'))} / {us(num(d, 'p99_us'))}",
               f"{us(num(c, 'p50_us'))} / {us(num(c, 'p99_us'))}",
               f"{added(num(d, 'p50_us'), num(c, 'p50_us'))} / "
               f"{added(num(d, 'p99_us'), num(c, 'p99_us'))}"]
        for floor, _, _ in floors:
            f = get(floor)
            row += [f"{added(num(d, 'p50_us'), num(f, 'p50_us'))} / "
                    f"{added(num(d, 'p99_us'), num(f, 'p99_us'))}"]
        if has_nginx:
            row += [f"{us(num(n, 'p50_us'))} / {us(num(n, 'p99_us'))}",
                    f"{added(num(d, 'p50_us'), num(n, 'p50_us'))} / "
                    f"{added(num(d, 'p99_us'), num(n, 'p99_us'))}"]
        rps = [us(num(x, "achieved_rps")) for x in ([d, c, n] if has_nginx else [d, c])]
        errs = sum(int(num(get(t), "errors") or 0) for t in targets)
        row += [" / ".join(rps), str(errs)]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    if rounds > 1:
        out.append("p99 of each round (µs), in the order measured; † marks a round with at least "
                   f"{STEAL_WARN_PCT:.0f} % host steal:")
        out.append("")
        out.append("| rate | " + " | ".join(targets) + " |")
        out.append("|---|" + "---|" * len(targets))
        for rate in rates.split():
            cells = [rate]
            for t in targets:
                cell = runs.get(("rate", rate, t), {})
                # `merge` fills both lists from the same rounds, one entry each.
                values = [us(p99) + ("†" if steal is not None and steal >= STEAL_WARN_PCT else "")
                          for p99, steal in zip(cell.get("p99_rounds", []),
                                                cell.get("steal_rounds", []))]
                cells.append(" / ".join(values) or "–")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    gateways = [t for t in ("compresh", "compresh-pgo", "compresh-poll") if t in targets]
    # Each build's same-round differences from nginx (resampled: computed once, used by the
    # table here and by the goal lines).
    per_target = {t: round_differences(runs, rates, t) if rounds > 1 and has_nginx else {}
                  for t in gateways}
    if rounds > 1 and has_nginx and gateways:
        out += paired_table(per_target, rates)
    if trace_dir and os.path.isdir(trace_dir):
        out += stall_table(runs, trace_dir, rates, targets)

    out.append("### CPU per request of the serving process (µs)")
    out.append("")
    out.append("User + system time from `/proc/PID/stat` over the whole run at that rate (warm-up "
               "included), divided by the requests sent. For direct this is the mock provider "
               "itself; for the proxies the proxy alone (nginx: master + workers). Less "
               "sensitive to the shared machine than latency or throughput.")
    out.append("")
    out.append("| rate | " + " | ".join("mock (direct)" if t == "direct" else t for t in targets)
               + " |")
    out.append("|---|" + "---|" * len(targets))
    for rate in rates.split():
        cells = [rate]
        for t in targets:
            f = runs.get(("rate", rate, t), {})
            cpu, w, d = num(f, "cpu_ms"), num(f, "warmup"), num(f, "duration")
            sent = None if None in (w, d) else float(rate) * (w + d)
            cells.append("–" if cpu is None or not sent else f"{cpu * 1000 / sent:.0f}")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")

    out.append("### Maximum throughput (closed loop)")
    out.append("")
    out.append("Busy: CPUs' worth of time the serving process used (1.00 = one CPU all the time). "
               "A proxy below its CPUs' worth was held back by the client side, not by its own "
               "capacity; requests per CPU-second compares capacity either way.")
    out.append("")
    out.append("| path | requests/s | ratio to direct | p50 / p99 | busy | requests per CPU-second "
               "| errors |")
    out.append("|---|---|---|---|---|---|---|")
    direct_max = num(runs.get(("max", "max", "direct"), {}), "achieved_rps")
    for t in targets:
        f = runs.get(("max", "max", t), {})
        rps = num(f, "achieved_rps")
        ratio = "–" if rps is None or not direct_max else f"{rps / direct_max:.2f}"
        busy = cores_busy(f)
        out.append(f"| {t} | {us(rps)} | {ratio} | {us(num(f, 'p50_us'))} / "
                   f"{us(num(f, 'p99_us'))} | {'–' if busy is None else f'{busy:.2f}'} | "
                   f"{us(per_cpu_second(f))} | {count(f, 'errors')} |")
    out.append("")

    out.append("### Streams (SSE, time to first body byte)")
    out.append("")
    out.append("| path | rate | TTFB p50 / p99 | added TTFB p50 / p99 | errors |")
    out.append("|---|---|---|---|---|")
    stream = {k[2]: v for k, v in runs.items() if k[0] == "stream"}
    sd = stream.get("direct", {})
    for t in targets:
        f = stream.get(t, {})
        out.append(f"| {t} | {f.get('target_rps', '–')} | {us(num(f, 'ttfb_p50_us'))} / "
                   f"{us(num(f, 'ttfb_p99_us'))} | "
                   f"{added(num(sd, 'ttfb_p50_us'), num(f, 'ttfb_p50_us'))} / "
                   f"{added(num(sd, 'ttfb_p99_us'), num(f, 'ttfb_p99_us'))} | "
                   f"{count(f, 'errors')} |")
    out.append("")

    peak = max((num(v, "rss_kb") or 0 for k, v in runs.items() if k[2] == "compresh"),
               default=0)
    out.append(f"**Gateway RSS** (VmRSS): idle {int(idle_rss) / 1024:.1f} MiB (after one "
               f"request), peak under load {peak / 1024:.1f} MiB.")
    out.append("")
    if has_nginx:
        n_max = num(runs.get(("max", "max", "nginx"), {}), "achieved_rps")
        for t in gateways:
            out.append(goal_line(runs, rates, rounds, t, n_max, per_target[t]))
            out.append("")
        floor_max = [(noun, num(runs.get(("max", "max", t), {}), "achieved_rps"))
                     for t, _, noun in floors]
        floor_max = [f"{noun} {rps / n_max:.0%}"
                     for noun, rps in floor_max if rps is not None and n_max]
        if floor_max:
            out.append(f"(Max throughput in the same run, as a share of nginx's: "
                       f"{', '.join(floor_max)}.)")
        c_eff, n_eff = (per_cpu_second(runs.get(("max", "max", t), {}))
                        for t in ("compresh", "nginx"))
        floor_eff = [(noun, per_cpu_second(runs.get(("max", "max", t), {})))
                     for t, _, noun in floors]
        floor_eff = [f", {noun} {eff / n_eff:.0%}" for noun, eff in floor_eff if eff and n_eff]
        if c_eff and n_eff:
            out.append(f"Requests per CPU-second at max throughput: compresh {c_eff / n_eff:.0%} "
                       "of nginx's" + "".join(floor_eff) + ".")
        out.append("")
    return "\n".join(out)


def main():
    results, out_path, idle_rss, rates, smoke = sys.argv[1:6]
    trace_dir = sys.argv[6] if len(sys.argv) > 6 else None
    block = render(parse(results), idle_rss, rates, smoke, trace_dir)
    try:
        with open(out_path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmark results\n\n"
    begin, end = (PINNED_BEGIN, PINNED_END) if os.environ.get("PINNING") else (BEGIN, END)
    if begin in text and end in text:
        before = text[: text.index(begin)]
        after = text[text.index(end) + len(end):]
    else:
        before, after = text.rstrip("\n") + "\n\n", "\n"
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(before + begin + "\n" + block + "\n" + end + after)


if __name__ == "__main__":
    main()
