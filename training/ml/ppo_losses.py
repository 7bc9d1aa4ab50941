"""PPO's phases as small pure functions over tensors (InstructGPT's RLHF step: Ouyang et al. 2022,
after Ziegler et al. 2019 and Stiennon et al. 2020), each citing its equation; tests check them
against hand-computed values.

Shapes: B responses of up to T tokens; `mask` (B, T) is 1 on a response's tokens, 0 on padding.
Position t of a row is the t-th token the policy wrote; its log-probability, value and reward
are at the same position.

    per_token_rewards   -beta * KL(pi || pi_ref) on every token, the reward model's score on the last
    gae                 advantages and returns (Schulman et al. 2016, generalised advantage estimation)
    whiten              advantages to mean 0, std 1 over the batch's tokens
    policy_loss         PPO's clipped surrogate (Schulman et al. 2017, eq. 7)
    value_loss          the clipped value loss (as OpenAI's baselines and TRL compute it)
    entropy             the policy's mean per-token entropy (the bonus's term)
    AdaptiveKLController, FixedKLController   how beta moves (Ziegler et al. 2019, eq. 2)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """(B,) the index of each row's last response token."""
    return (mask.sum(dim=1) - 1).clamp(min=0).long()


def per_token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                      *, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """InstructGPT's reward (Ouyang et al. 2022, eq. 2, without its ptx term), spread over tokens
    as Ziegler et al. 2019 do: every token t gets -beta * (log pi(y_t) - log pi_ref(y_t)), the
    per-token estimate of KL(pi || pi_ref), and the last token also gets the reward model's score.

    scores (B,); logprobs, ref_logprobs, mask (B, T). Returns (rewards (B, T), kl (B, T)), 0 on
    padding; kl summed over a row is that response's KL estimate in nats."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    rows = torch.arange(scores.shape[0], device=scores.device)
    rewards[rows, last_positions(mask)] += scores
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16):

        delta_t = r_t + gamma * V_{t+1} - V_t          (V after the last token is 0)
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t                            (the value function's target)

    rewards, values, mask (B, T). Returns (advantages, returns), each (B, T), 0 on padding."""
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def whiten(values: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / std over the masked tokens (the mean is kept when `shift_mean` is False)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    out = (values - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                *, clip: float) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate objective (Schulman et al. 2017, eq. 7), as a loss to minimise:

        ratio_t = exp(log pi(y_t) - log pi_old(y_t))
        L = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))

    Returns (loss, {"clip_fraction", "approx_kl"}): the share of tokens where the clipped term
    was taken, and the k3 estimate of KL(pi_old || pi), mean((ratio - 1) - log ratio)
    (Schulman 2020), which is never negative."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    return loss, {"clip_fraction": float(clip_fraction), "approx_kl": float(approx_kl)}


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *,
               clip: float) -> tuple[torch.Tensor, dict]:
    """The clipped value loss (OpenAI baselines' ppo2; TRL's PPO): the new value may move at most
    `clip` from the value at rollout time, and the worse of the two errors counts:

        V_clip = V_old + clip(V - V_old, -c, c)
        L = 1/2 mean_t max((V - R)^2, (V_clip - R)^2)

    Returns (loss, {"value_clip_fraction"})."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        fraction = masked_mean((clipped_error > unclipped_error).float(), mask)
    return loss, {"value_clip_fraction": float(fraction)}


def entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token entropy H = -sum_v p_v log p_v of the policy's next-token distributions."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return masked_mean(-(log_p.exp() * log_p).sum(dim=-1), mask)


@dataclass
class FixedKLController:
    """beta stays where it starts."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        return None

    def state(self) -> dict:
        return {"value": self.value}


@dataclass
class AdaptiveKLController:
    """Ziegler et al. 2019, eq. 2: beta moves so that the KL per response tracks `target`:

        e = clip(KL / target - 1, -0.2, 0.2)
        beta <- beta * (1 + K_beta * e),  K_beta = n_steps / horizon

    where n_steps is how many responses the last rollout had."""

    value: float
    target: float
    horizon: int

    def update(self, current_kl: float, n_steps: int) -> None:
        if not math.isfinite(current_kl):
            return
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon

    def state(self) -> dict:
        return {"value": self.value}
