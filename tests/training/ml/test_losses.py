"""The losses against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from training.ml.losses import (
    IGNORE_INDEX,
    causal_lm_loss_sum,
    dpo_pair_loss,
    mean_per_prompt,
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


def _log_sigmoid(z: float) -> float:
    return -math.log1p(math.exp(-z))


# Two pairs: log-probabilities of chosen and rejected answers under the policy and the reference.
POLICY_W, POLICY_L = torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -18.0])
REF_W, REF_L = torch.tensor([-11.0, -19.0]), torch.tensor([-11.5, -19.5])
# h = (pi_w - ref_w) - (pi_l - ref_l): pair 0: 1 - (-0.5) = 1.5; pair 1: -1 - 1.5 = -2.5


def test_dpo_loss_is_minus_log_sigmoid_of_beta_times_the_log_ratio_margin():
    loss, chosen, rejected = dpo_pair_loss(POLICY_W, POLICY_L, REF_W, REF_L, beta=0.1)
    assert loss.tolist() == pytest.approx([-_log_sigmoid(0.15), -_log_sigmoid(-0.25)], rel=1e-6)
    assert chosen.tolist() == pytest.approx([0.1, -0.1], rel=1e-6)  # beta * (pi_w - ref_w)
    assert rejected.tolist() == pytest.approx([-0.05, 0.15], rel=1e-6)


def test_dpo_label_smoothing_mixes_in_the_flipped_label():
    loss, _, _ = dpo_pair_loss(POLICY_W, POLICY_L, REF_W, REF_L, beta=0.5, label_smoothing=0.2)
    expected = [-0.8 * _log_sigmoid(0.5 * h) - 0.2 * _log_sigmoid(-0.5 * h) for h in (1.5, -2.5)]
    assert loss.tolist() == pytest.approx(expected, rel=1e-6)


def test_ipo_loss_is_the_squared_distance_of_the_margin_from_one_over_two_beta():
    loss, _, _ = dpo_pair_loss(POLICY_W, POLICY_L, REF_W, REF_L, beta=0.25, loss="ipo")
    assert loss.tolist() == pytest.approx([(1.5 - 2.0) ** 2, (-2.5 - 2.0) ** 2], rel=1e-6)


def test_dpo_loss_at_the_reference_is_log_2_and_pushes_chosen_up_rejected_down():
    policy_w = REF_W.clone().requires_grad_(True)
    policy_l = REF_L.clone().requires_grad_(True)
    loss, _, _ = dpo_pair_loss(policy_w, policy_l, REF_W, REF_L, beta=0.1)
    assert loss.tolist() == pytest.approx([math.log(2)] * 2, rel=1e-6)
    loss.sum().backward()
    assert (policy_w.grad < 0).all() and (policy_l.grad > 0).all()  # descent raises chosen, lowers rejected


def test_mean_per_prompt_weighs_every_prompt_the_same():
    got = mean_per_prompt(torch.tensor([1.0, 2.0, 3.0, 10.0]), torch.tensor([0, 0, 0, 2]), 3)
    assert got.tolist() == pytest.approx([2.0, 0.0, 10.0])  # prompt 1 has no pair
