"""Tests of benches/pooled.py: python3 -m unittest discover -s benches -p 'test_*.py'"""

import os
import random
import tempfile
import unittest

import pooled


def merged_quantile(rounds, picks, q):
    merged = sorted(x for i in picks for x in rounds[i])
    return merged[min(len(merged) - 1, int(len(merged) * q))]


class PooledQuantile(unittest.TestCase):
    def test_matches_the_quantile_of_the_merged_latencies(self):
        rng = random.Random(1)
        for _ in range(200):
            rounds = [sorted(rng.randrange(50, 5000) for _ in range(rng.randrange(1, 60)))
                      for _ in range(rng.randrange(1, 5))]
            picks = [rng.randrange(len(rounds)) for _ in range(rng.randrange(1, 6))]
            for q in (0.0, 0.5, 0.9, 0.99, 1.0):
                self.assertEqual(pooled.pooled_quantile(rounds, picks, q),
                                 merged_quantile(rounds, picks, q), (rounds, picks, q))

    def test_no_latencies_have_no_quantile(self):
        self.assertIsNone(pooled.pooled_quantile([[], []], [0, 1]))


class Compare(unittest.TestCase):
    def setUp(self):
        rng = random.Random(2)
        self.rounds = [sorted(rng.randrange(100, 900) for _ in range(500)) for _ in range(6)]

    def test_a_path_against_itself_differs_by_nothing(self):
        self.assertEqual(pooled.compare(self.rounds, self.rounds), (0, 0, 0))

    def test_a_constant_delay_shows_in_the_point_and_the_whole_interval(self):
        slower = [[x + 40 for x in r] for r in self.rounds]
        self.assertEqual(pooled.compare(slower, self.rounds), (40, 40, 40))
        self.assertEqual(pooled.compare(self.rounds, slower), (-40, -40, -40))

    def test_one_bad_round_widens_the_interval_around_the_point(self):
        spiky = [list(r) for r in self.rounds]
        spiky[3] = sorted(x + 2000 if x > 800 else x for x in spiky[3])
        point, low, high = pooled.compare(spiky, self.rounds)
        self.assertLessEqual(low, point)
        self.assertLessEqual(point, high)
        self.assertEqual(low, 0)
        self.assertGreater(high, 1000)

    def test_the_interval_leaves_out_the_most_extreme_resamples(self):
        # Round k of ours is 10 k µs slower than round k of theirs. A resample of only round 0
        # (difference 0) or only round 2 (difference 20) comes up 1 time in 27 each: in the
        # resamples' extremes, but short of their 5th and 95th percentiles.
        same = [self.rounds[0]] * 3
        slower = [[x + 10 * k for x in r] for k, r in enumerate(same)]
        point, low, high = pooled.compare(slower, same)
        self.assertTrue(0 < low <= point <= high < 20, (low, point, high))

    def test_rounds_pair_by_position_and_extra_ones_are_left_out(self):
        extra = self.rounds + [[10_000] * 500]
        self.assertEqual(pooled.compare(extra, self.rounds), (0, 0, 0))


class RoundsOf(unittest.TestCase):
    def test_reads_one_target_at_one_rate_in_round_order(self):
        with tempfile.TemporaryDirectory() as trace_dir:
            files = {"2000.nginx.2": "0 300\n1000 100\n", "2000.nginx.10": "0 7\n",
                     "2000.nginx.1": "0 5\n", "2000.compresh.1": "0 1\n",
                     "500.nginx.1": "0 2\n", "2000.nginx.1.tmp": "0 3\n"}
            for name, text in files.items():
                with open(os.path.join(trace_dir, name), "w", encoding="utf-8") as f:
                    f.write(text)
            self.assertEqual(pooled.rounds_of(trace_dir, "2000", "nginx"),
                             [[5], [100, 300], [7]])


if __name__ == "__main__":
    unittest.main()
