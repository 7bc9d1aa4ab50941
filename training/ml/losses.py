"""Losses: short pure functions over tensors, each citing its equation. Tests check them against
hand-computed values.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def causal_lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Next-token cross-entropy, summed over target tokens, and how many there are.

    logits (B, T, V); labels (B, T) with IGNORE_INDEX where a token is not a target (prompt,
    earlier turns, padding). Position t predicts labels[t + 1]:

        L = -sum_{t: y_{t+1} != ignore} log p(y_{t+1} | y_{<=t})

    A sum, not a mean: the caller divides by the tokens of the whole optimizer step (all
    micro-batches, all processes), so every target token weighs the same however the step is cut.
    """
    shift_logits = logits[:, :-1, :].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    total = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return total, int((shift_labels != IGNORE_INDEX).sum())


def pairwise_ranking_loss(chosen: torch.Tensor, rejected: torch.Tensor,
                          margin: torch.Tensor | None = None) -> torch.Tensor:
    """InstructGPT's reward-model loss for pairs (Ouyang et al. 2022, eq. 1), per pair:

        loss = -log sigmoid(r(x, y_w) - r(x, y_l) - m)

    with an optional margin m (Llama 2, Touvron et al. 2023, eq. 2). chosen, rejected, margin
    (P,). Returns (P,). softplus(-z) = -log sigmoid(z), computed stably.
    """
    diff = chosen.float() - rejected.float()
    if margin is not None:
        diff = diff - margin.float()
    return F.softplus(-diff)


def ranking_loss_per_prompt(scores: torch.Tensor, better: torch.Tensor, worse: torch.Tensor,
                            pair_prompt: torch.Tensor, n_prompts: int,
                            margin: torch.Tensor | None = None) -> torch.Tensor:
    """The K-way ranking loss of InstructGPT (eq. 1): every K(K-1)/2 pair of a prompt's ranking,
    computed from one score per candidate, averaged per prompt:

        loss_x = 1/|P_x| sum_{(w,l) in P_x} -log sigmoid(r_w - r_l - m_wl)

    scores (N,) one per candidate of the batch; better, worse (P,) indexes into scores;
    pair_prompt (P,) which prompt (0..n_prompts-1) each pair belongs to. Returns (n_prompts,):
    the caller sums them and divides by the prompts of the whole step. Equal to the mean of
    `pairwise_ranking_loss` over each prompt's pairs (a test holds them equal), but each answer
    is scored once rather than once per pair it is in.
    """
    per_pair = pairwise_ranking_loss(scores[better], scores[worse], margin)  # (P,)
    return mean_per_prompt(per_pair, pair_prompt, n_prompts)


def mean_per_prompt(per_pair: torch.Tensor, pair_prompt: torch.Tensor, n_prompts: int) -> torch.Tensor:
    """(n_prompts,) the mean of `per_pair` (P,) over each prompt's pairs (0 for a prompt with
    none): every prompt weighs the same whatever the size of its ranking."""
    sums = torch.zeros(n_prompts, dtype=per_pair.dtype, device=per_pair.device).index_add(0, pair_prompt, per_pair)
    counts = torch.zeros(n_prompts, dtype=per_pair.dtype, device=per_pair.device).index_add(
        0, pair_prompt, torch.ones_like(per_pair))
    return sums / counts.clamp(min=1)


def dpo_pair_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
                  reference_rejected: torch.Tensor, *, beta: float, loss: str = "sigmoid",
                  label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO's loss per pair, from the log-probabilities (P,) of each pair's chosen and rejected
    answer under the policy and the frozen reference. With the log-ratio margin

        h = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))

    "sigmoid" (Rafailov et al. 2023, eq. 7), with conservative label smoothing eps (Mitchell
    2023, cDPO):   loss = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
    "ipo" (Azar et al. 2023, eq. 17):   loss = (h - 1 / (2 beta))^2

    Returns (loss, chosen_reward, rejected_reward), each (P,); the implicit rewards
    beta * (log pi - log pi_ref) are detached, for metrics (accuracy: chosen > rejected).
    """
    chosen_ratio = policy_chosen.float() - reference_chosen.float()
    rejected_ratio = policy_rejected.float() - reference_rejected.float()
    h = chosen_ratio - rejected_ratio
    if loss == "ipo":
        per_pair = (h - 1 / (2 * beta)) ** 2
    elif loss == "sigmoid":
        per_pair = (1 - label_smoothing) * F.softplus(-beta * h) + label_smoothing * F.softplus(beta * h)
    else:
        raise ValueError(f"unknown DPO loss {loss!r}")
    return per_pair, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
