"""The reward model as a trainer Task: InstructGPT's ranking loss over every pair of each
prompt's ranking, each answer scored once; evaluation (pairwise accuracy with its interval, per
source) and the offset that centres rewards after training."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from training.ml.config import RewardConfig
from training.ml.data import RewardGroup, microbatches, step_plan
from training.ml.evaluation import accuracy_with_interval
from training.ml.losses import ranking_loss_per_prompt
from training.ml.models import autocast, score_groups


def group_cost(group: RewardGroup, *, shared_prefix: bool) -> int:
    """Padded tokens a group adds to a forward pass (what micro-batches are cut by)."""
    longest_answer = max(len(r) for r in group.responses)
    if shared_prefix:
        return len(group.prompt_ids) + len(group.responses) * longest_answer
    return len(group.responses) * group.longest


def preference_plan(groups: Sequence[RewardGroup], config, epoch: int) -> list[list[int]]:
    """The steps of an epoch of a task that learns from rankings (reward model, DPO):
    `prompts_per_step` ranked prompts a step, length-grouped by what each adds to a forward."""
    shared = config.share_prompt_prefix
    return step_plan(len(groups), per_step=config.prompts_per_step, seed=config.seed, epoch=epoch,
                     lengths=[group_cost(g, shared_prefix=shared) for g in groups])


def pair_tensors(groups: Sequence[RewardGroup], device) -> tuple[torch.Tensor, ...]:
    """(better, worse, pair_prompt, margin) over the answers of `groups` flattened in order."""
    better, worse, owner, margin = [], [], [], []
    offset = 0
    for g_index, group in enumerate(groups):
        for i, j, m in group.pairs:
            better.append(offset + i)
            worse.append(offset + j)
            owner.append(g_index)
            margin.append(m)
        offset += len(group.responses)

    def as_tensor(values, dtype):
        return torch.tensor(values, dtype=dtype, device=device)

    return (as_tensor(better, torch.long), as_tensor(worse, torch.long), as_tensor(owner, torch.long),
            as_tensor(margin, torch.float32))


def score_batch(model, groups: Sequence[RewardGroup], *, pad_id: int, device, precision: str,
                shared_prefix: bool) -> torch.Tensor:
    """Scores (N,) of every answer of `groups`, in order."""
    with autocast(device, precision):
        return score_groups(model, [g.prompt_ids for g in groups], [g.responses for g in groups], pad_id=pad_id,
                            shared_prefix=shared_prefix)


@dataclass
class RewardTask:
    train: list[RewardGroup]
    validation: list[RewardGroup]
    config: RewardConfig
    pad_id: int
    device: torch.device
    precision: str = "fp32"
    heartbeat: Callable[[], None] | None = None  # called during evaluation, which has no steps

    def plan(self, epoch: int) -> list[list[int]]:
        return preference_plan(self.train, self.config, epoch)

    def _microbatches(self, groups: Sequence[RewardGroup]) -> list[list[int]]:
        shared = self.config.share_prompt_prefix
        return microbatches([group_cost(g, shared_prefix=shared) for g in groups], self.config.tokens_per_microbatch)

    def step(self, model, items: list[int], *, global_items: list[int], backward: Callable[[torch.Tensor], None],
             progress: Callable[[], None]) -> dict:
        groups = [self.train[i] for i in items]
        sums = defaultdict(float)
        use_margin = self.config.use_rating_margin
        for micro in self._microbatches(groups):
            chunk = [groups[i] for i in micro]
            scores = score_batch(model, chunk, pad_id=self.pad_id, device=self.device, precision=self.precision,
                                 shared_prefix=self.config.share_prompt_prefix)
            better, worse, owner, margin = pair_tensors(chunk, self.device)
            per_prompt = ranking_loss_per_prompt(scores, better, worse, owner, len(chunk),
                                                 margin if use_margin else None)  # (n,)
            backward(per_prompt.sum() / len(global_items))
            with torch.no_grad():
                diff = scores[better] - scores[worse]
                sums["loss_sum"] += float(per_prompt.sum())
                sums["loss_count"] += len(chunk)
                sums["accuracy_sum"] += float((diff > 0).float().sum() + 0.5 * (diff == 0).float().sum())
                sums["accuracy_count"] += len(diff)
                sums["reward_margin_sum"] += float(diff.sum())
                sums["reward_margin_count"] += len(diff)
                sums["reward_mean_sum"] += float(scores.sum())
                sums["reward_mean_count"] += len(scores)
                sums["tokens"] += sum(g.tokens for g in chunk)
            progress()
        return dict(sums)

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        if not self.validation:
            return {}
        result = reward_evaluate(model, self.validation, pad_id=self.pad_id, device=self.device,
                                 precision=self.precision, tokens_per_microbatch=self.config.tokens_per_microbatch,
                                 shared_prefix=self.config.share_prompt_prefix, seed=self.config.seed,
                                 progress=(lambda done, total: self.heartbeat()) if self.heartbeat else None)
        return {f"validation/{k}": v for k, v in result.items()}


@torch.no_grad()
def reward_evaluate(model, groups: Sequence[RewardGroup], *, pad_id: int, device, precision: str = "fp32",
                    tokens_per_microbatch: int = 8192, shared_prefix: bool = True, seed: int = 0,
                    progress: Callable[[int, int], None] | None = None) -> dict:
    """Pairwise accuracy of a reward model on `groups` (ties were never made into pairs), with its
    95% interval, the mean ranking loss, and accuracy per source. `progress(done, total)` is
    called after each micro-batch."""
    model.eval()
    per_prompt: list[tuple[float, int]] = []
    by_source: dict[str, list[tuple[float, int]]] = defaultdict(list)
    loss_sum = 0.0
    costs = [group_cost(g, shared_prefix=shared_prefix) for g in groups]
    batches = microbatches(costs, tokens_per_microbatch)
    for done, micro in enumerate(batches, start=1):
        chunk = [groups[i] for i in micro]
        scores = score_batch(model, chunk, pad_id=pad_id, device=device, precision=precision,
                             shared_prefix=shared_prefix)
        better, worse, owner, _ = pair_tensors(chunk, device)
        loss_sum += float(ranking_loss_per_prompt(scores, better, worse, owner, len(chunk)).sum())
        diff = scores[better] - scores[worse]
        correct = (diff > 0).float() + 0.5 * (diff == 0).float()
        for index, group in enumerate(chunk):
            mine = owner == index
            row = (float(correct[mine].sum()), int(mine.sum()))
            per_prompt.append(row)
            by_source[group.source].append(row)
        if progress is not None:
            progress(done, len(batches))
    result = accuracy_with_interval(per_prompt, seed=seed)
    result["loss"] = round(loss_sum / max(len(groups), 1), 6)
    result["by_source"] = {source: accuracy_with_interval(rows, seed=seed) for source, rows in sorted(by_source.items())}
    return result


@torch.no_grad()
def score_pairs(model, items: Sequence[tuple[Sequence[int], Sequence[int]]], *, pad_id: int, device,
                precision: str = "fp32", tokens_per_microbatch: int = 8192) -> list[float]:
    """Raw scores of (prompt tokens, answer tokens) items, in order."""
    model.eval()
    out: list[float] = [0.0] * len(items)
    lengths = [len(p) + len(a) for p, a in items]
    for micro in microbatches(lengths, tokens_per_microbatch):
        with autocast(device, precision):
            scores = score_groups(model, [items[i][0] for i in micro], [[items[i][1]] for i in micro], pad_id=pad_id,
                                  shared_prefix=False)
        for i, value in zip(micro, scores.tolist()):
            out[i] = float(value)
    return out


def reward_offset(model, best: Sequence[tuple[Sequence[int], Sequence[int]]], *, pad_id: int, device,
                  precision: str = "fp32", tokens_per_microbatch: int = 8192) -> tuple[float, float, int]:
    """(mean, std, count) of the raw scores of the training split's best answers: subtracting the
    mean makes them score 0 on average."""
    if not best:
        return 0.0, 0.0, 0
    scores = torch.tensor(score_pairs(model, best, pad_id=pad_id, device=device, precision=precision,
                                      tokens_per_microbatch=tokens_per_microbatch))
    return float(scores.mean()), float(scores.std()) if len(scores) > 1 else 0.0, len(scores)
