"""Tests of benches/report.py's round-by-round comparison:
python3 -m unittest discover -s benches -p 'test_*.py'"""

import random
import unittest

import report


class PairedDifference(unittest.TestCase):
    def test_a_proxy_against_itself_differs_by_nothing(self):
        p99s = [455, 471, 2458, 512, 365]
        self.assertEqual(report.paired_difference(p99s, p99s), (0, 0, 0, 0, 0))

    def test_a_constant_delay_shows_in_the_median_and_the_whole_interval(self):
        theirs = [300, 420, 380, 1900, 350, 410]
        ours = [p + 40 for p in theirs]
        self.assertEqual(report.paired_difference(ours, theirs), (40, 40, 40, 6, 0))
        self.assertEqual(report.paired_difference(theirs, ours), (-40, -40, -40, 0, 6))

    def test_rounds_pair_by_position(self):
        # Sorted, these would be equal; round by round ours is 10 above in every round.
        theirs = [500, 300, 400]
        ours = [510, 310, 410]
        self.assertEqual(report.paired_difference(ours, theirs)[3:], (3, 0))
        # Paired in another order, the same p99s are a round of 90 below and one of 110 above.
        self.assertEqual(report.paired_difference(list(reversed(ours)), theirs)[3:], (2, 1))

    def test_one_bad_round_moves_the_median_little(self):
        theirs = [400] * 8
        ours = [410, 390, 405, 395, 2400, 400, 415, 385]
        median, low, high, above, below = report.paired_difference(ours, theirs)
        self.assertEqual(median, 2.5)
        self.assertLessEqual(low, median)
        self.assertLessEqual(median, high)
        self.assertLess(high, 100)
        self.assertEqual((above, below), (4, 3))

    def test_the_interval_leaves_out_the_most_extreme_resamples(self):
        # Twelve rounds, differences 0..110: a resample's median below 30 or above 80 takes
        # mostly the extreme rounds, which happens in far fewer than 5 % of resamples.
        theirs = [400] * 12
        ours = [400 + 10 * k for k in range(12)]
        median, low, high, _, _ = report.paired_difference(ours, theirs)
        self.assertEqual(median, 55)
        self.assertTrue(20 < low < median < high < 90, (low, high))

    def test_rounds_missing_on_either_side_are_left_out(self):
        self.assertEqual(report.paired_difference([500, None, 420], [450, 400, None])[0], 50)
        self.assertIsNone(report.paired_difference([None], [400]))
        self.assertIsNone(report.paired_difference([], []))

    def test_the_same_input_gives_the_same_interval(self):
        rng = random.Random(3)
        ours = [rng.randrange(300, 700) for _ in range(8)]
        theirs = [rng.randrange(300, 700) for _ in range(8)]
        self.assertEqual(report.paired_difference(ours, theirs),
                         report.paired_difference(ours, theirs))


class Verdict(unittest.TestCase):
    def test_reads_the_interval_against_zero(self):
        self.assertEqual(report.verdict((-5, -20, 0, 1, 5)), "at or below")
        self.assertEqual(report.verdict((30, 1, 60, 6, 0)), "above")
        self.assertEqual(report.verdict((3, -10, 20, 3, 3)), "not told apart from")
        # An interval that reaches 0 on either side does not tell them apart.
        self.assertEqual(report.verdict((5, 0, 20, 3, 1)), "not told apart from")


if __name__ == "__main__":
    unittest.main()
