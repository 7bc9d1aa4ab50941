"""Supervised fine-tuning as a trainer Task: the causal-LM loss on the answer's tokens only, over
length-grouped micro-batches, and the validation loss on held-out demonstrations."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from training.ml.config import SFTConfig
from training.ml.data import SFTExample, microbatches, step_plan
from training.ml.losses import IGNORE_INDEX, causal_lm_loss_sum
from training.ml.models import autocast, causal_lm_logits


def sft_batch(examples: Sequence[SFTExample], *, pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (IGNORE_INDEX on the prompt and padding)."""
    width = max(e.length for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        row = torch.tensor(e.input_ids, dtype=torch.long)
        ids[i, :e.length] = row
        mask[i, :e.length] = 1
        labels[i, e.answer_start:e.length] = row[e.answer_start:]
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def target_tokens(example: SFTExample) -> int:
    """How many tokens of an example are predicted (its answer's; the first token is never a
    target since nothing precedes it)."""
    return example.length - max(example.answer_start, 1)


@dataclass
class SFTTask:
    train: list[SFTExample]
    validation: list[SFTExample]
    config: SFTConfig
    pad_id: int
    device: torch.device
    precision: str = "fp32"
    heartbeat: Callable[[], None] | None = None  # called during evaluation, which has no steps

    def plan(self, epoch: int) -> list[list[int]]:
        return step_plan(len(self.train), per_step=self.config.batch_size, seed=self.config.seed, epoch=epoch,
                         lengths=[e.length for e in self.train])

    def _loss_sum(self, model, examples: Sequence[SFTExample]) -> tuple[torch.Tensor, int]:
        batch = sft_batch(examples, pad_id=self.pad_id, device=self.device)
        with autocast(self.device, self.precision):
            logits = causal_lm_logits(model, batch["input_ids"], batch["attention_mask"])
        return causal_lm_loss_sum(logits, batch["labels"])

    def step(self, model, items: list[int], *, global_items: list[int], backward: Callable[[torch.Tensor], None],
             progress: Callable[[], None]) -> dict:
        global_tokens = sum(target_tokens(self.train[i]) for i in global_items)
        examples = [self.train[i] for i in items]
        loss_sum, tokens, padded = 0.0, 0, 0
        for group in microbatches([e.length for e in examples], self.config.tokens_per_microbatch):
            chunk = [examples[i] for i in group]
            total, n = self._loss_sum(model, chunk)
            backward(total / max(global_tokens, 1))
            loss_sum += float(total.detach())
            tokens += n
            padded += len(chunk) * max(e.length for e in chunk)
            progress()
        return {"loss_sum": loss_sum, "loss_count": tokens, "tokens": sum(e.length for e in examples),
                "padded_tokens": padded}

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        """Mean validation loss per answer token, and its perplexity."""
        if not self.validation:
            return {}
        loss_sum, tokens = 0.0, 0
        for group in microbatches([e.length for e in self.validation], self.config.tokens_per_microbatch):
            total, n = self._loss_sum(model, [self.validation[i] for i in group])
            loss_sum += float(total)
            tokens += n
            if self.heartbeat is not None:
                self.heartbeat()
        loss = loss_sum / max(tokens, 1)
        return {"validation/loss": round(loss, 6), "validation/perplexity": round(math.exp(min(loss, 50)), 4),
                "validation/tokens": tokens, "validation/examples": len(self.validation)}
