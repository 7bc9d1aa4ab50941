"""PPO as a trainer Task (InstructGPT's third step): the policy answers the snapshot's training
prompts, a reward model scores the answers, and PPO's clipped objective with a per-token KL
penalty to the starting model moves the policy towards higher reward.

One optimizer step of the shared trainer is one mini-batch of a rollout:

    plan(epoch)   the epoch's prompts in a seeded order, cut into rollouts of `rollout_prompts`;
                  each rollout is trained on `ppo_epochs` times, each time in a new seeded order
                  cut into mini-batches of `minibatch_prompts` (the steps)
    step          on a rollout's first step: roll_out (sample, score, per-token rewards, GAE);
                  then the clipped policy loss, clipped value loss, entropy bonus and PPO-ptx
                  on the mini-batch's answers
    save_state / load_state   the rollout being trained on and the KL controller go into every
                  checkpoint, so a run killed mid-rollout resumes on the very same answers

Each phase is a function of training.ml.ppo_losses (checked by hand in tests); sampling is the
generation jobs' sampler (training.ml.sampling, batched KV-cache decoding). The value head is a
linear layer on the policy's own hidden states (a shared trunk, as TRL's former
AutoModelForCausalLMWithValueHead): no second model to hold and train on a CPU.

Why our own loop, not TRL: TRL 1.16 no longer ships PPO (its RLOO and GRPO trainers keep no
value function, no per-token KL reward and no resumable rollout), and the product needs every
phase as a function a test calls and a run that resumes after SIGKILL.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from training.ml.config import PPOConfig
from training.ml.data import SFTExample, epoch_order, microbatches
from training.ml.losses import causal_lm_loss_sum
from training.ml.models import answer_token_outputs, autocast, causal_lm_logits
from training.ml.ppo_losses import (
    AdaptiveKLController,
    FixedKLController,
    gae,
    masked_mean,
    per_token_rewards,
    policy_loss,
    value_loss,
    whiten,
)
from training.ml.sampling import derive_seed
from training.ml.soft_prompt import base_transformer
from training.ml.winrate import PolicyPrompt, sample_answers

SAMPLES_LOGGED = 3  # sample answers with their rewards in a rollout's first step's metrics


class PolicyDiverged(RuntimeError):
    """The policy moved further from its starting model than the run allows (kl_bound)."""


# (prompts, answer texts, whether each answer stopped) -> one score per answer
RewardFn = Callable[[Sequence[PolicyPrompt], Sequence[str]], Sequence[float]]
# (prompt token lists, answer token lists) -> (N, R) per-token log-probabilities under the reference
ReferenceFn = Callable[[Sequence[Sequence[int]], Sequence[Sequence[int]]], torch.Tensor]


def attach_value_head(model, *, seed: int) -> torch.nn.Module:
    """A scalar value head on the policy's last hidden state, trainable, starting at 0 (so the
    first advantages are the rewards themselves). Kept as `model.value_head`."""
    hidden = base_transformer(model).config.hidden_size
    torch.manual_seed(seed)
    head = torch.nn.Linear(hidden, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    model.add_module("value_head", head)
    return head


def detach_value_head(model) -> None:
    """The policy without its value head (saved as a plain causal LM)."""
    if hasattr(model, "value_head"):
        del model.value_head


def kl_controller(config: PPOConfig):
    if config.adaptive_kl:
        return AdaptiveKLController(value=config.kl_coef, target=config.kl_target, horizon=config.kl_horizon)
    return FixedKLController(value=config.kl_coef)


@dataclass
class Rollout:
    """One rollout: its prompts (train indexes), the answers sampled, and what PPO trains on."""

    key: tuple[int, int]  # (epoch, rollout index in the epoch)
    prompts: list[int]
    answers: list[tuple[int, ...]]
    old_logprobs: torch.Tensor  # (n, R)
    ref_logprobs: torch.Tensor  # (n, R)
    old_values: torch.Tensor  # (n, R)
    advantages: torch.Tensor  # (n, R), whitened
    returns: torch.Tensor  # (n, R)
    mask: torch.Tensor  # (n, R)
    metrics: dict = field(default_factory=dict)  # logged with the rollout's first step

    def row(self, prompt_index: int) -> int:
        return self.prompts.index(prompt_index)


def _pad_rows(rows: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, :r.shape[0]] = r
    return out


@dataclass
class PPOTask:
    train: list[PolicyPrompt]
    validation: list[PolicyPrompt]
    config: PPOConfig
    tokenizer: object
    pad_id: int
    device: torch.device
    reward_fn: RewardFn
    reference_fn: ReferenceFn
    demonstrations: list[SFTExample] = field(default_factory=list)  # PPO-ptx
    precision: str = "fp32"
    heartbeat: Callable[[], None] | None = None
    rollout: Rollout | None = None
    controller: object = None
    first_length: float | None = None  # the first rollout's mean answer length (the drift alarm's yardstick)
    _rollout_of: dict = field(default_factory=dict)  # train index -> (epoch, rollout index, its prompts)

    def __post_init__(self):
        if self.controller is None:
            self.controller = kl_controller(self.config)

    # --- The plan ------------------------------------------------------------------------------

    def plan(self, epoch: int) -> list[list[int]]:
        c = self.config
        order = epoch_order(len(self.train), seed=c.seed, epoch=epoch)
        steps: list[list[int]] = []
        self._rollout_of = {}
        for r, start in enumerate(range(0, len(order), c.rollout_prompts)):
            chunk = order[start:start + c.rollout_prompts]
            for index in chunk:
                self._rollout_of[index] = (epoch, r, chunk)
            for ppo_epoch in range(c.ppo_epochs):
                shuffled = list(chunk)
                random.Random(f"{c.seed}:{epoch}:{r}:{ppo_epoch}").shuffle(shuffled)
                steps.extend(shuffled[i:i + c.minibatch_prompts] for i in range(0, len(shuffled), c.minibatch_prompts))
        return steps

    # --- Rollout: sample, score, per-token rewards, advantages -----------------------------------

    def _beat(self, *_args) -> None:
        if self.heartbeat is not None:
            self.heartbeat()

    @torch.no_grad()
    def _policy_outputs(self, model, prompts: Sequence[Sequence[int]],
                        answers: Sequence[Sequence[int]]) -> tuple[torch.Tensor, ...]:
        """(logprobs, values, entropy, mask), each (n, R), for answers to prompts, without
        gradients, in micro-batches."""
        parts = defaultdict(list)
        for micro in microbatches([len(p) + len(a) for p, a in zip(prompts, answers)],
                                  self.config.tokens_per_microbatch):
            with autocast(self.device, self.precision):
                out = answer_token_outputs(model, [prompts[i] for i in micro], [[answers[i]] for i in micro],
                                           pad_id=self.pad_id, shared_prefix=False, with_entropy=True)
                values = model.value_head(out["hidden"]).squeeze(-1).float()
            for j, i in enumerate(micro):
                n = len(answers[i])
                parts[i] = (out["logprobs"][j, :n].cpu(), values[j, :n].cpu(), out["entropy"][j, :n].cpu())
            self._beat()
        width = max(len(a) for a in answers)
        logprobs, values, entropy = (_pad_rows([parts[i][k] for i in range(len(answers))], width) for k in range(3))
        mask = _pad_rows([torch.ones(len(a)) for a in answers], width)
        return logprobs, values, entropy, mask

    @torch.no_grad()
    def _reference_outputs(self, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]]) -> torch.Tensor:
        """(n, R) per-token log-probabilities of the answers under the reference, in the same
        token-budgeted micro-batches as the policy's (a rollout in one forward would spike memory)."""
        rows: dict[int, torch.Tensor] = {}
        for micro in microbatches([len(p) + len(a) for p, a in zip(prompts, answers)],
                                  self.config.tokens_per_microbatch):
            out = self.reference_fn([prompts[i] for i in micro], [answers[i] for i in micro]).cpu()
            for j, i in enumerate(micro):
                rows[i] = out[j, :len(answers[i])]
            self._beat()
        return _pad_rows([rows[i] for i in range(len(answers))], max(len(a) for a in answers))

    def roll_out(self, model, key: tuple[int, int], indexes: list[int]) -> Rollout:
        c = self.config
        prompts = [self.train[i] for i in indexes]
        model.eval()
        sampled = sample_answers(model, self.tokenizer, prompts, seed=derive_seed(c.seed, "rollout", *key),
                                 max_new_tokens=c.max_new_tokens, temperature=c.temperature, on_step=self._beat)
        # Every answer has a last token to score and put the reward on: its stop token when it
        # stopped (kept as sampled: its log-probability enters the ratio and the KL), else its
        # last sampled token. The pad token stands in only should a sampler return nothing.
        answers = [tuple(ids) if ids else (self.pad_id,) for ids, _, _ in sampled]
        prompt_ids = [p.input_ids for p in prompts]
        logprobs, values, entropy, mask = self._policy_outputs(model, prompt_ids, answers)
        ref_logprobs = self._reference_outputs(prompt_ids, answers) * mask
        raw = torch.tensor([float(s) for s in self.reward_fn(prompts, [text for _, text, _ in sampled])])
        scores = raw - c.missing_eos_penalty * torch.tensor([0.0 if stopped else 1.0 for _, _, stopped in sampled])
        if c.reward_clip:
            scores = scores.clamp(-c.reward_clip, c.reward_clip)
        kl_coef = self.controller.value
        # Every process rolls out the whole rollout, so each subtracts the same mean.
        baselined = scores - scores.mean() if c.center_scores and len(scores) > 1 else scores
        rewards, kl = per_token_rewards(baselined, logprobs, ref_logprobs, mask, kl_coef=kl_coef)
        advantages, returns = gae(rewards, values, mask, gamma=c.gamma, lam=c.lam)
        advantages = whiten(advantages, mask)
        kl_per_answer = kl.sum(dim=1)
        mean_kl = float(kl_per_answer.mean())
        if mean_kl > c.kl_bound:
            raise PolicyDiverged(
                f"The policy's answers are {mean_kl:.1f} nats from the starting model's on average, past kl_bound "
                f"({c.kl_bound:g}): the run stopped before it drifts further (its last checkpoint is kept). Start a new "
                "run with a lower learning_rate or a higher kl_coef, or raise kl_bound if this KL is acceptable.")
        self.controller.update(mean_kl, len(indexes))
        lengths = mask.sum(dim=1)
        mean_length = float(lengths.mean())
        if self.first_length is None:
            self.first_length = mean_length
        drift = mean_length / max(self.first_length, 1.0)
        order = sorted(range(len(sampled)), key=lambda i: float(scores[i]), reverse=True)
        metrics = {
            "reward_sum": float(scores.sum()), "reward_count": len(scores),
            # Values every process computes alike (each rolls out the whole rollout) go out as a
            # sum and a count, which the trainer adds up across processes: their mean stays right.
            "reward_std_sum": float(scores.std()) if len(scores) > 1 else 0.0, "reward_std_count": 1,
            "score_sum": float(raw.sum()), "score_count": len(raw),
            "kl_sum": float(kl_per_answer.sum()), "kl_count": len(kl_per_answer),
            "entropy_sum": float((entropy * mask).sum()), "entropy_count": float(mask.sum()),
            "response_length_sum": float(lengths.sum()), "response_length_count": len(lengths),
            "stopped_sum": float(sum(stopped for _, _, stopped in sampled)), "stopped_count": len(sampled),
            "kl_coef_sum": kl_coef, "kl_coef_count": 1, "length_drift_sum": drift, "length_drift_count": 1,
            "samples": [{"prompt_id": prompts[i].prompt_id, "answer": sampled[i][1][:500],
                         "reward": round(float(scores[i]), 4)}
                        for i in dict.fromkeys(order[:SAMPLES_LOGGED - 1] + order[-1:])],  # best, and worst
        }
        if not 1 / c.length_drift_alarm <= drift <= c.length_drift_alarm:
            metrics["alarm"] = (f"answer length drifted to {drift:.2f}x the first rollout's ({mean_length:.0f} against "
                                f"{self.first_length:.0f} tokens): check that the reward is not just rewarding length")
        return Rollout(key=key, prompts=list(indexes), answers=answers, old_logprobs=logprobs,
                       ref_logprobs=ref_logprobs, old_values=values, advantages=advantages, returns=returns,
                       mask=mask, metrics=metrics)

    # --- Update --------------------------------------------------------------------------------

    def step(self, model, items: list[int], *, global_items: list[int], backward: Callable[[torch.Tensor], None],
             progress: Callable[[], None]) -> dict:
        c = self.config
        epoch, r, chunk = self._rollout_of[global_items[0]]
        sums: dict = defaultdict(float)
        if self.rollout is None or self.rollout.key != (epoch, r):
            self.rollout = self.roll_out(model, (epoch, r), chunk)
            model.train()
            sums.update(self.rollout.metrics)
        rollout = self.rollout
        rows = [rollout.row(i) for i in items]
        global_tokens = float(sum(rollout.mask[rollout.row(i)].sum() for i in global_items))
        prompts = [self.train[i].input_ids for i in items]
        answers = [rollout.answers[j] for j in rows]
        for micro in microbatches([len(p) + len(a) for p, a in zip(prompts, answers)], c.tokens_per_microbatch):
            picked = [rows[i] for i in micro]
            width = max(len(answers[i]) for i in micro)
            mask = rollout.mask[picked, :width].to(self.device)
            with autocast(self.device, self.precision):
                out = answer_token_outputs(model, [prompts[i] for i in micro], [[answers[i]] for i in micro],
                                           pad_id=self.pad_id, shared_prefix=False, with_entropy=c.entropy_coef > 0)
                values = model.value_head(out["hidden"]).squeeze(-1).float()
            share = float(mask.sum()) / max(global_tokens, 1.0)  # this micro-batch's part of the step's tokens
            pg, pg_stats = policy_loss(out["logprobs"], rollout.old_logprobs[picked, :width].to(self.device),
                                       rollout.advantages[picked, :width].to(self.device), mask, clip=c.clip_range)
            vf, vf_stats = value_loss(values, rollout.old_values[picked, :width].to(self.device),
                                      rollout.returns[picked, :width].to(self.device), mask, clip=c.value_clip)
            loss = pg + c.value_coef * vf
            if c.entropy_coef > 0:
                loss = loss - c.entropy_coef * masked_mean(out["entropy"], mask)
            backward(loss * share)
            tokens = float(mask.sum())
            sums["loss_sum"] += float(loss.detach()) * tokens
            sums["loss_count"] += tokens
            sums["policy_loss_sum"] += float(pg.detach()) * tokens
            sums["policy_loss_count"] += tokens
            sums["value_loss_sum"] += float(vf.detach()) * tokens
            sums["value_loss_count"] += tokens
            for name, value in {**pg_stats, **vf_stats}.items():
                sums[f"{name}_sum"] += value * tokens
                sums[f"{name}_count"] += tokens
            progress()
        if c.ptx_coef > 0 and self.demonstrations and items:
            sums.update(self._ptx(model, items, global_items, backward, epoch))
        return dict(sums)

    def _ptx(self, model, items, global_items, backward, epoch) -> dict:
        """PPO-ptx (InstructGPT eq. 2): ptx_coef x the LM loss on demonstrations drawn for this
        step (seeded by the step's prompts), split across processes by this process's share."""
        c = self.config
        rng = random.Random(f"{c.seed}:ptx:{epoch}:{','.join(map(str, global_items))}")
        drawn = [self.demonstrations[rng.randrange(len(self.demonstrations))] for _ in range(c.ptx_examples)]
        own = set(items)  # this process's share: the demonstrations drawn at its prompts' positions
        mine = [d for i, d in enumerate(drawn) if global_items[i % len(global_items)] in own]
        from training.ml.sft import sft_batch, target_tokens

        if not mine:
            return {}

        total_targets = sum(target_tokens(e) for e in drawn)
        batch = sft_batch(mine, pad_id=self.pad_id, device=self.device)
        with autocast(self.device, self.precision):
            logits = causal_lm_logits(model, batch["input_ids"], batch["attention_mask"])
        loss_sum, count = causal_lm_loss_sum(logits, batch["labels"])
        backward(c.ptx_coef * loss_sum / max(total_targets, 1))
        return {"ptx_loss_sum": float(loss_sum.detach()), "ptx_loss_count": count}

    # --- Evaluation ----------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        """Mean reward and KL to the starting model of answers sampled for the validation
        prompts (the same seed each time, so evaluations compare)."""
        if not self.validation:
            return {}
        c = self.config
        model.eval()
        sampled = sample_answers(model, self.tokenizer, self.validation, seed=derive_seed(c.seed, "evaluate"),
                                 max_new_tokens=c.max_new_tokens, temperature=c.temperature, on_step=self._beat)
        answers = [tuple(ids) if ids else (self.pad_id,) for ids, _, _ in sampled]
        prompt_ids = [p.input_ids for p in self.validation]
        logprobs, _, _, mask = self._policy_outputs(model, prompt_ids, answers)
        kl = ((logprobs - self._reference_outputs(prompt_ids, answers)) * mask).sum(dim=1)
        scores = torch.tensor([float(s) for s in self.reward_fn(self.validation, [t for _, t, _ in sampled])])
        return {"validation/reward": round(float(scores.mean()), 6), "validation/kl": round(float(kl.mean()), 6),
                "validation/response_length": round(float(mask.sum(dim=1).mean()), 2),
                "validation/prompts": len(self.validation)}

    # --- Checkpoints ---------------------------------------------------------------------------

    def save_state(self, folder: Path) -> None:
        torch.save({"controller": self.controller.state(), "rollout": self.rollout, "first_length": self.first_length},
                   folder / "ppo.pt")

    def load_state(self, folder: Path) -> None:
        state = torch.load(folder / "ppo.pt", weights_only=False)
        self.controller.value = state["controller"]["value"]
        self.rollout = state["rollout"]
        self.first_length = state.get("first_length")
