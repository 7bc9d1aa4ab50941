"""Accuracy intervals: Wilson by hand, and a bootstrap over prompts that widens when a prompt's
pairs move together."""
from __future__ import annotations

import pytest

from training.ml.evaluation import accuracy_with_interval, wilson_interval


def test_wilson_interval_matches_the_formula():
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # textbook values for 8/10
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_few_prompts_fall_back_to_wilson():
    result = accuracy_with_interval([(3, 4), (1, 2)])
    assert result["accuracy"] == pytest.approx(4 / 6) and result["pairs"] == 6 and result["prompts"] == 2
    assert result["ci_method"] == "Wilson over pairs"
    assert result["accuracy_ci"] == pytest.approx(list(wilson_interval(4, 6)), abs=1e-6)


def test_bootstrap_over_prompts_is_wider_than_treating_pairs_as_independent():
    # 40 prompts of 6 pairs each, all right or all wrong: pairs are not 240 independent draws.
    per_prompt = [(6, 6)] * 28 + [(0, 6)] * 12
    result = accuracy_with_interval(per_prompt, seed=1)
    assert result["accuracy"] == pytest.approx(0.7)
    low, high = result["accuracy_ci"]
    w_low, w_high = wilson_interval(168, 240)
    assert low < 0.7 < high and (high - low) > 1.5 * (w_high - w_low)
    assert result["ci_method"].startswith("bootstrap")
    assert accuracy_with_interval(per_prompt, seed=1) == result  # seeded: reproducible


def test_no_pairs_no_accuracy():
    assert accuracy_with_interval([])["accuracy"] is None
    assert accuracy_with_interval([(0, 0)])["pairs"] == 0
