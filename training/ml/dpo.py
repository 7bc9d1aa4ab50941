"""DPO as a trainer Task: the policy learns every untied pair of each prompt's ranking directly,
against the frozen reference it starts from (Rafailov et al. 2023), with IPO and conservative
label smoothing as options (training.ml.losses.dpo_pair_loss).

Where it differs from TRL's DPOTrainer, and why (bench/dpo.py measures it):
- one forward per candidate of a K-way ranking, the prompt encoded once for all K
  (answer_logprobs with a shared prefix), where TRL runs a chosen and a rejected sequence per
  pair: a ranking of K answers has K(K-1)/2 pairs but only K answers;
- the reference's log-probabilities are computed once, before the first step, and cached (in
  the checkpoint folder, so a resumed run does not compute them again): no reference model
  sits in memory while the policy trains, with or without LoRA;
- the loss is averaged per prompt, as the reward model's, so a prompt with a long ranking
  weighs the same as one with a single pair.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from training.ml.config import DPOConfig
from training.ml.data import RewardGroup, microbatches
from training.ml.evaluation import accuracy_with_interval
from training.ml.losses import dpo_pair_loss, mean_per_prompt
from training.ml.models import answer_logprobs, autocast
from training.ml.reward import group_cost, pair_tensors, preference_plan

REFERENCE_FILE = "reference_logprobs.pt"


def group_logprobs(model, groups: Sequence[RewardGroup], *, pad_id: int, device, precision: str,
                   shared_prefix: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities (N,), token counts (N,)) of every answer of `groups`, in order."""
    with autocast(device, precision):
        return answer_logprobs(model, [g.prompt_ids for g in groups], [g.responses for g in groups], pad_id=pad_id,
                               shared_prefix=shared_prefix)


def groups_fingerprint(groups: Sequence[RewardGroup]) -> str:
    """A hash of the groups' tokens: a cached reference belongs to exactly these examples."""
    digest = hashlib.sha256()
    for g in groups:
        digest.update(repr((g.prompt_ids, g.responses)).encode())
    return digest.hexdigest()


@torch.no_grad()
def reference_logprobs(model, groups: Sequence[RewardGroup], *, pad_id: int, device, precision: str = "fp32",
                       tokens_per_microbatch: int = 8192, shared_prefix: bool = True,
                       progress: Callable[[], None] | None = None) -> list[tuple[tuple[float, ...], tuple[int, ...]]]:
    """For each group, its answers' (log-probabilities, token counts) under `model` (the
    reference: the policy before its first step)."""
    model.eval()
    out: list = [None] * len(groups)
    costs = [group_cost(g, shared_prefix=shared_prefix) for g in groups]
    for micro in microbatches(costs, tokens_per_microbatch):
        chunk = [groups[i] for i in micro]
        logps, counts = group_logprobs(model, chunk, pad_id=pad_id, device=device, precision=precision,
                                       shared_prefix=shared_prefix)
        offset = 0
        for i, group in zip(micro, chunk):
            k = len(group.responses)
            out[i] = (tuple(logps[offset:offset + k].tolist()), tuple(int(c) for c in counts[offset:offset + k]))
            offset += k
        if progress is not None:
            progress()
    return out


def load_reference(path: Path, groups: Sequence[RewardGroup]) -> list | None:
    """The reference log-probabilities saved at `path` if they were computed for exactly these
    groups, else None."""
    if not path.exists():
        return None
    saved = torch.load(path, weights_only=False)
    return saved["reference"] if saved.get("fingerprint") == groups_fingerprint(groups) else None


def save_reference(path: Path, groups: Sequence[RewardGroup], reference: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"fingerprint": groups_fingerprint(groups), "reference": reference}, tmp)
    tmp.replace(path)  # whole or absent: a worker killed while writing leaves no torn file


def _flatten(reference: Sequence[tuple[tuple[float, ...], tuple[int, ...]]], device) -> tuple[torch.Tensor, ...]:
    logps = [v for values, _ in reference for v in values]
    counts = [c for _, cs in reference for c in cs]
    return (torch.tensor(logps, dtype=torch.float32, device=device),
            torch.tensor(counts, dtype=torch.float32, device=device))


@dataclass
class DPOTask:
    train: list[RewardGroup]
    validation: list[RewardGroup]
    config: DPOConfig
    pad_id: int
    device: torch.device
    # Per group (log-probabilities, token counts) of its answers under the reference.
    train_reference: list
    validation_reference: list
    precision: str = "fp32"
    heartbeat: Callable[[], None] | None = None  # called during evaluation, which has no steps

    def plan(self, epoch: int) -> list[list[int]]:
        return preference_plan(self.train, self.config, epoch)

    def _pair_losses(self, model, groups: Sequence[RewardGroup], reference: Sequence) -> dict[str, torch.Tensor]:
        """Per pair: the loss and the implicit rewards of its two answers; per prompt: the loss."""
        logps, counts = group_logprobs(model, groups, pad_id=self.pad_id, device=self.device,
                                       precision=self.precision, shared_prefix=self.config.share_prompt_prefix)
        ref_logps, ref_counts = _flatten(reference, self.device)
        if self.config.loss == "ipo":  # per-token means (see DPOConfig.loss)
            logps, ref_logps = logps / counts.clamp(min=1), ref_logps / ref_counts.clamp(min=1)
        better, worse, owner, _ = pair_tensors(groups, self.device)
        per_pair, chosen, rejected = dpo_pair_loss(logps[better], logps[worse], ref_logps[better], ref_logps[worse],
                                                   beta=self.config.beta, loss=self.config.loss,
                                                   label_smoothing=self.config.label_smoothing)
        return {"per_prompt": mean_per_prompt(per_pair, owner, len(groups)), "chosen": chosen, "rejected": rejected,
                "owner": owner, "chosen_logps": logps[better].detach()}

    def step(self, model, items: list[int], *, global_items: list[int], backward: Callable[[torch.Tensor], None],
             progress: Callable[[], None]) -> dict:
        groups = [self.train[i] for i in items]
        sums = defaultdict(float)
        costs = [group_cost(g, shared_prefix=self.config.share_prompt_prefix) for g in groups]
        for micro in microbatches(costs, self.config.tokens_per_microbatch):
            chunk = [groups[i] for i in micro]
            out = self._pair_losses(model, chunk, [self.train_reference[items[i]] for i in micro])
            backward(out["per_prompt"].sum() / len(global_items))
            margin = out["chosen"] - out["rejected"]
            sums["loss_sum"] += float(out["per_prompt"].detach().sum())
            sums["loss_count"] += len(chunk)
            for name, values in (("accuracy", (margin > 0).float() + 0.5 * (margin == 0).float()),
                                 ("reward_margin", margin), ("reward_chosen", out["chosen"]),
                                 ("reward_rejected", out["rejected"]), ("logp_chosen", out["chosen_logps"])):
                sums[f"{name}_sum"] += float(values.sum())
                sums[f"{name}_count"] += len(values)
            sums["tokens"] += sum(g.tokens for g in chunk)
            progress()
        return dict(sums)

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        """On the validation split: the loss, the implicit reward's pairwise accuracy (the policy
        prefers the chosen answer more than the reference did) with its 95% interval, and the
        mean reward margin."""
        if not self.validation:
            return {}
        model.eval()
        per_prompt: list[tuple[float, int]] = []
        loss_sum, margin_sum, pairs = 0.0, 0.0, 0
        costs = [group_cost(g, shared_prefix=self.config.share_prompt_prefix) for g in self.validation]
        for micro in microbatches(costs, self.config.tokens_per_microbatch):
            chunk = [self.validation[i] for i in micro]
            out = self._pair_losses(model, chunk, [self.validation_reference[i] for i in micro])
            margin = out["chosen"] - out["rejected"]
            correct = (margin > 0).float() + 0.5 * (margin == 0).float()
            for index in range(len(chunk)):
                mine = out["owner"] == index
                per_prompt.append((float(correct[mine].sum()), int(mine.sum())))
            loss_sum += float(out["per_prompt"].sum())
            margin_sum += float(margin.sum())
            pairs += len(margin)
            if self.heartbeat is not None:
                self.heartbeat()
        result = accuracy_with_interval(per_prompt, seed=self.config.seed)
        result["loss"] = round(loss_sum / len(self.validation), 6)
        result["reward_margin"] = round(margin_sum / max(pairs, 1), 6)
        return {f"validation/{k}": v for k, v in result.items()}
