"""PPO's phases against hand-computed tensors."""
from __future__ import annotations

import math

import pytest
import torch

from training.ml.ppo_losses import (
    AdaptiveKLController,
    FixedKLController,
    entropy,
    gae,
    per_token_rewards,
    policy_loss,
    value_loss,
    whiten,
)

def flat(rows):
    return [v for row in rows for v in row]


# Two responses: the first 3 tokens long, the second 2 (one pad).
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_per_token_rewards_put_minus_beta_kl_on_every_token_and_the_score_on_the_last():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -0.5, -1.0]])
    rewards, kl = per_token_rewards(torch.tensor([2.0, -1.0]), logprobs, ref, MASK, kl_coef=0.1)
    assert kl.flatten().tolist() == pytest.approx(flat([[0.5, -1.0, 0.0], [1.0, -0.5, 0.0]]))  # 0 on the pad
    assert rewards.flatten().tolist() == pytest.approx(flat([[-0.05, 0.1, 2.0], [-0.1, 0.05 - 1.0, 0.0]]))


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, -1.0, 7.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    gamma, lam = 0.9, 0.8
    advantages, returns = gae(rewards, values, MASK, gamma=gamma, lam=lam)
    # Row 0: delta_2 = 1 - 0.3 = 0.7; delta_1 = 0 + 0.9*0.3 - 0.2 = 0.07; delta_0 = 0.9*0.2 - 0.1 = 0.08
    a2 = 0.7
    a1 = 0.07 + gamma * lam * a2
    a0 = 0.08 + gamma * lam * a1
    # Row 1 ends at t=1 (the pad's reward and value are ignored): delta_1 = -1 - 0.5; delta_0 = 0.5 + 0.9*0.5 - 0.4
    b1 = -1.5
    b0 = 0.55 + gamma * lam * b1
    assert advantages.flatten().tolist() == pytest.approx(flat([[a0, a1, a2], [b0, b1, 0.0]]), rel=1e-6)
    expected_returns = [[a0 + 0.1, a1 + 0.2, a2 + 0.3], [b0 + 0.4, b1 + 0.5, 0.0]]
    assert returns.flatten().tolist() == pytest.approx(flat(expected_returns), rel=1e-6)


def test_gae_with_gamma_and_lambda_one_is_the_reward_to_go_minus_the_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert advantages.flatten().tolist() == pytest.approx(flat([[5.5, 4.5, 2.5]]))
    assert returns.flatten().tolist() == pytest.approx(flat([[6.0, 5.0, 3.0]]))


def test_whiten_over_the_masked_tokens_only():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    out = whiten(values, MASK)
    kept = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    expected = (kept - kept.mean()) / kept.std(unbiased=False)
    assert out[MASK.bool()].tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert out[1, 2] == 0


def test_policy_loss_clips_the_ratio():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    advantages = torch.tensor([[1.0, 1.0, -2.0]])
    loss, stats = policy_loss(new, old, advantages, torch.ones(1, 3), clip=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(-0.5, -0.8) = -0.5; token 2: max(2.2, 2.2) = 2.2
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3, rel=1e-6)
    assert stats["clip_fraction"] == pytest.approx(1 / 3)
    k3 = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)]
    assert stats["approx_kl"] == pytest.approx(sum(k3) / 3, rel=1e-5)


def test_policy_loss_gradient_raises_tokens_with_positive_advantage():
    new = torch.zeros(1, 2, requires_grad=True)
    loss, _ = policy_loss(new, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), clip=0.2)
    loss.backward()
    assert new.grad[0, 0] < 0 < new.grad[0, 1]


def test_value_loss_takes_the_worse_of_clipped_and_unclipped():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])
    returns = torch.tensor([[2.0, -1.0]])
    loss, stats = value_loss(new, old, returns, torch.ones(1, 2), clip=0.2)
    # token 0: clipped value 0.2, errors (1-2)^2 = 1 and (0.2-2)^2 = 3.24 -> 3.24
    # token 1: clipped value 0.1 (inside), errors (1.1)^2 = 1.21 both -> 1.21
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.21) / 2, rel=1e-6)
    assert stats["value_clip_fraction"] == pytest.approx(0.5)


def test_entropy_of_uniform_and_certain_distributions():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    assert entropy(logits, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(math.log(4), rel=1e-6)
    assert entropy(logits, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_adaptive_kl_controller_follows_ziegler_eq_2():
    controller = AdaptiveKLController(value=0.1, target=6.0, horizon=10000)
    controller.update(current_kl=9.0, n_steps=256)  # error clipped to +0.2
    assert controller.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000))
    controller.update(current_kl=5.4, n_steps=100)  # error -0.1
    assert controller.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000) * (1 - 0.1 * 100 / 10000))
    fixed = FixedKLController(value=0.05)
    fixed.update(current_kl=100.0, n_steps=64)
    assert fixed.value == 0.05
