"""The losses against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from training.ml.losses import (
    IGNORE_INDEX,
    causal_lm_loss_sum,
    pairwise_ranking_loss,
    ranking_loss_per_prompt,
)


def test_pairwise_ranking_loss_is_minus_log_sigmoid_of_the_difference():
    chosen = torch.tensor([2.0, 0.0, -1.0])
    rejected = torch.tensor([0.0, 0.0, 1.0])
    got = pairwise_ranking_loss(chosen, rejected)
    expected = [-math.log(1 / (1 + math.exp(-2.0))), math.log(2.0), -math.log(1 / (1 + math.exp(2.0)))]
    assert got.tolist() == pytest.approx(expected, rel=1e-6)  # 0.126928, 0.693147, 2.126928


def test_margin_is_subtracted_from_the_difference():
    got = pairwise_ranking_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([1.5]))
    assert got.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))), rel=1e-6)


def test_loss_is_stable_for_large_differences():
    got = pairwise_ranking_loss(torch.tensor([0.0, 200.0]), torch.tensor([200.0, 0.0]))
    assert got.tolist() == pytest.approx([200.0, 0.0], abs=1e-6)


def test_k_way_loss_equals_the_mean_of_the_pairwise_losses_it_replaces():
    # Prompt 0 ranks answers [a > b > c] (3 pairs); prompt 1 ranks [d > e] (1 pair).
    scores = torch.tensor([1.0, 0.2, -0.5, 0.3, 0.9], requires_grad=True)
    better = torch.tensor([0, 0, 1, 3])
    worse = torch.tensor([1, 2, 2, 4])
    owner = torch.tensor([0, 0, 0, 1])
    per_prompt = ranking_loss_per_prompt(scores, better, worse, owner, 2)
    a, b, c, d, e = scores.tolist()
    pair = lambda w, l: math.log1p(math.exp(-(w - l)))  # noqa: E731
    assert per_prompt.tolist() == pytest.approx([(pair(a, b) + pair(a, c) + pair(b, c)) / 3, pair(d, e)], rel=1e-6)
    # ... and to the pairwise loss computed two forwards a pair (each pair's scores looked up again).
    pairwise = [pairwise_ranking_loss(scores[w].reshape(1), scores[l].reshape(1)).item() for w, l in zip(better, worse)]
    assert per_prompt[0].item() == pytest.approx(sum(pairwise[:3]) / 3, rel=1e-6)
    per_prompt.sum().backward()
    assert scores.grad[0] < 0 < scores.grad[2]  # the best answer is pushed up, the worst down


def test_k_way_loss_with_margins():
    scores = torch.tensor([1.0, 0.0])
    got = ranking_loss_per_prompt(scores, torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), 1,
                                  torch.tensor([0.4]))
    assert got.item() == pytest.approx(math.log1p(math.exp(-0.6)), rel=1e-6)


def test_causal_lm_loss_sums_only_the_targets_and_counts_them():
    # Vocabulary of 3; one sequence of 4 tokens; only the last two are targets.
    logits = torch.log(torch.tensor([[[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2], [1 / 3, 1 / 3, 1 / 3]]]))
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2, 0]])
    total, count = causal_lm_loss_sum(logits, labels)
    # Position 1 predicts token 2 (p = 0.8), position 2 predicts token 0 (p = 0.6).
    assert count == 2
    assert total.item() == pytest.approx(-math.log(0.8) - math.log(0.6), rel=1e-6)
