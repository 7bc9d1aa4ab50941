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
    sums = torch.zeros(n_prompts, dtype=per_pair.dtype, device=per_pair.device).index_add(0, pair_prompt, per_pair)
    counts = torch.zeros(n_prompts, dtype=per_pair.dtype, device=per_pair.device).index_add(
        0, pair_prompt, torch.ones_like(per_pair))
    return sums / counts.clamp(min=1)
