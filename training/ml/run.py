"""One training run from start to saved model, for any kind: what the Celery task calls in its
worker and `python -m training.ml.launch` calls under `accelerate launch` (several processes).

    run_training(spec, rows, hooks)  ->  RunOutput
        1. the config, validated (config_from_dict)
        2. the tokenizer, and the snapshot rows made into examples (train and validation splits)
        3. the base model (as a reward model for "reward"), with a LoRA adapter if asked
        3b. DPO: the reference's log-probabilities of every answer, once (cached beside the
           checkpoints, so a resumed run reads them back)
        4. trainer.train: steps, checkpoints, resume, evaluation
        5. a reward model's offset, so that the training split's best answers score mean 0; a
           policy's win rate over the model it started from, judged by the run's reward model
        6. the model (or adapter) and tokenizer saved to spec.output_dir

No Django: the snapshot's rows come in as dicts (a callable returning a fresh iterator, since
they are read once per split), progress goes out through Hooks.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.ml import data as D
from training.ml.config import (BestOfNConfig, DPOConfig, PPOConfig, PreferenceConfig, RewardConfig, SFTConfig,
                                TrainConfig, config_from_dict)
from training.ml.models import (
    add_lora,
    freeze_lower_layers,
    resolve_train_layers,
    load_causal_lm_for_training,
    load_reward_model_for_training,
    load_tokenizer,
    resolve_precision,
    reward_pad_token,
    save_trained,
)
from training.ml.soft_prompt import adapter_start_problem, adapter_type, add_soft_prompt
from training.ml.trainer import Hooks, TrainResult, train


class TrainingDataError(ValueError):
    """The snapshot has nothing this kind can learn from; the message says what is missing."""


@dataclass
class RunSpec:
    kind: str  # "sft" | "reward" | "dpo" | "ppo" | "best_of_n"
    base_path: str  # the base model's directory (or GGUF file), or its adapter's directory
    config: dict  # the run's config as JSON (validated here)
    output_dir: str  # where the trained model (or adapter) is saved
    checkpoint_dir: str  # where checkpoints go (and are resumed from)
    base_adapter_of: str | None = None  # when base_path is an adapter: the directory of its base
    # A policy's judge (DPO: optional, for the win-rate evaluation): the reward model's directory,
    # and its base's when it is a LoRA adapter.
    reward_model_path: str | None = None
    reward_model_adapter_of: str | None = None


@dataclass
class RunOutput:
    config: TrainConfig
    result: TrainResult
    data: dict  # {"train": DataStats, "validation": DataStats} as dicts
    output_dir: Path
    metrics: dict  # the final metrics the model is registered with
    device: str
    adapter: bool  # the output is a peft adapter (LoRA or a soft prompt) on the run's base
    reward_offset: dict | None = None  # {"mean", "std", "answers"} for reward models
    win_rate: dict | None = None  # a policy's win rate over its starting model (training.ml.winrate)
    seconds: dict = field(default_factory=dict)  # {"prepare", "train", "save"}


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_examples(kind: str, config: TrainConfig, rows: Callable[[], Iterable[dict]], tokenizer):
    """(train, validation, stats) for `kind` from the snapshot's rows; TrainingDataError when the
    training split has nothing to learn from."""
    if kind == "ppo":
        return _ppo_prompts(config, rows, tokenizer)
    if kind == "best_of_n":
        return _best_of_n_prompts(config, rows, tokenizer)
    if kind == "sft":
        assert isinstance(config, SFTConfig)
        make = lambda split: D.sft_examples(rows(), tokenizer, split=split, max_length=config.max_length,  # noqa: E731
                                            max_response_tokens=config.max_response_tokens)
        what = "demonstrations (ideal answers written on the prompt page or imported)"
    else:
        assert isinstance(config, PreferenceConfig)
        margins = {"use_rating_margin": config.use_rating_margin, "margin_scale": config.margin_scale} \
            if isinstance(config, RewardConfig) else {}
        make = lambda split: D.reward_groups(rows(), tokenizer, split=split, max_length=config.max_length,  # noqa: E731
                                             max_response_tokens=config.max_response_tokens, labels=config.labels,
                                             **margins)
        what = "rankings with at least one untied pair"
    train_examples, train_stats = make("train")
    validation, validation_stats = make("validation")
    stats = {"train": train_stats.as_dict(), "validation": validation_stats.as_dict(), "held_out": True}
    kept = D.seeded_subset(train_examples, config.max_prompts if isinstance(config, DPOConfig) else None,
                           seed=config.seed)
    if len(kept) < len(train_examples):
        train_examples = kept
        stats["train"].update(examples_available=stats["train"]["examples"], examples=len(train_examples),
                              pairs=sum(len(g.pairs) for g in train_examples))
    if not train_examples and validation:
        # A few labels that all fell in the validation split (the split is by prompt, for every
        # kind at once): train on them rather than refuse, and hold nothing out, so that no
        # metric is ever computed on what the model was trained on. The run and the model say so.
        stats.update(held_out=False, note=f"The training split has no {what}; the run trained on the "
                     f"{len(validation)} of the validation split and held none out (no validation metrics).")
        return validation, [], stats
    if not train_examples:
        raise TrainingDataError(f"The snapshot has no {what}. Add some and make a new snapshot, then start the "
                                "run again.")
    return train_examples, validation, stats


POLICY_KINDS = ("dpo", "ppo", "best_of_n")  # judged at the end by their win rate over their start
PPO_VALIDATION_PROMPTS = 16  # sampled at each evaluation of a PPO run (mean reward and KL)


def _ppo_prompts(config, rows, tokenizer):
    """(train prompts, validation prompts, stats) for PPO: the training split's prompts (up to
    max_prompts) are answered by the policy; a few validation prompts measure it as it trains."""
    from training.ml.winrate import policy_prompts

    train = policy_prompts(rows(), tokenizer, split="train", limit=config.max_prompts,
                           max_prompt_tokens=config.max_prompt_tokens, seed=config.seed)
    validation = policy_prompts(rows(), tokenizer, split="validation", limit=PPO_VALIDATION_PROMPTS,
                                max_prompt_tokens=config.max_prompt_tokens, seed=config.seed)
    if not train:
        raise TrainingDataError("The snapshot has no prompts in its training split for the policy to answer. Add "
                                "prompts and make a new snapshot, then start the run again.")
    stats = {"train": {"prompts": len(train), "examples": len(train)},
             "validation": {"prompts": len(validation), "examples": len(validation)}, "held_out": True}
    return train, validation, stats


def _best_of_n_prompts(config, rows, tokenizer):
    """(train prompts to answer, validation demonstrations, stats) for best-of-n: the kept answers
    are made once the model is loaded (_best_of_n_examples); the validation loss is measured on
    the validation split's demonstrations, when it has some."""
    from training.ml.winrate import policy_prompts

    prompts = policy_prompts(rows(), tokenizer, split="train", limit=config.max_prompts, seed=config.seed,
                             max_prompt_tokens=config.max_length - config.max_new_tokens - 1)
    if not prompts:
        raise TrainingDataError("The snapshot has no prompts in its training split to sample answers for. Add "
                                "prompts and make a new snapshot, then start the run again.")
    validation, validation_stats = D.sft_examples(rows(), tokenizer, split="validation", max_length=config.max_length,
                                                  max_response_tokens=config.max_response_tokens)
    return prompts, validation, {"train": {"prompts": len(prompts)}, "validation": validation_stats.as_dict(),
                                 "held_out": True}


class _Judge:
    """The run's reward model, loaded on first use and then shared: PPO and best-of-n learn from
    its scores and the win rate is judged by it, one copy in memory for both."""

    def __init__(self, spec: RunSpec, device):
        self.spec, self.device, self._loaded = spec, device, None

    def load(self, kind: str):
        """(model, tokenizer); TrainingDataError when the run was given no reward model."""
        from training.ml.models import load_reward_model_for_scoring

        if self._loaded is None:
            if not self.spec.reward_model_path:
                raise TrainingDataError(f"A {kind} run needs a reward model to learn from: pick one (reward_model).")
            adapter_of = self.spec.reward_model_adapter_of
            model, tokenizer = load_reward_model_for_scoring(Path(self.spec.reward_model_path),
                                                             adapter_of=Path(adapter_of) if adapter_of else None)
            self._loaded = (model.to(self.device), tokenizer)
        return self._loaded


def _reward_fn(judge: _Judge, *, max_length: int, max_response_tokens: int, kind: str):
    """score(prompts, answer texts) by the run's reward model."""
    from training.ml.winrate import reward_scores

    model, tokenizer = judge.load(kind)

    def score(prompts, texts):
        return reward_scores(model, tokenizer, prompts, texts, max_length=max_length,
                             max_response_tokens=max_response_tokens)

    return score


def _best_of_n_examples(model, spec: RunSpec, config, tokenizer, prompts, *, judge: _Judge, hooks: Hooks):
    """(the kept answers as SFT examples, the run page's summary of them)."""
    from training.ml.best_of_n import SAMPLES_FILE, best_examples, sample_candidates, summary

    score = _reward_fn(judge, max_length=config.max_length, max_response_tokens=config.max_new_tokens + 1,
                       kind="best-of-n")
    hooks.say(f"sampling {config.n} answers to each of {len(prompts)} training prompts and scoring them with "
              "the reward model (no optimizer steps until it is done)")
    candidates = sample_candidates(model, tokenizer, prompts, config, score=score,
                                   cache=Path(spec.checkpoint_dir) / SAMPLES_FILE,
                                   heartbeat=lambda: hooks.progress(0, 0))
    return best_examples(prompts, candidates), summary(prompts, candidates, kept_shown=BEST_OF_N_SHOWN)


BEST_OF_N_SHOWN = 200  # kept answers listed on the run page


def _ppo_task(model, config, rows, tokenizer, train, validation, *, judge: _Judge, device, precision,
              new_lora: bool):
    """The PPO task: its reward model (required), its frozen reference (the starting model; with
    a LoRA adapter new in this run, the same weights with the adapter switched off, so no second
    copy sits in memory; an adapter trained further, or a soft prompt, which starts away from
    the model without it, is copied as it starts), its value head and, for PPO-ptx, the
    snapshot's demonstrations."""
    import copy

    from training.ml.ppo import PPOTask, attach_value_head

    reward_fn = _reward_fn(judge, max_length=config.reward_max_length, max_response_tokens=config.max_new_tokens + 1,
                           kind="PPO")

    if new_lora:
        def reference_fn(prompts, answers):
            with torch.no_grad(), model.disable_adapter():
                return _padded_logprobs(model, prompts, answers, tokenizer.pad_token_id)
    else:
        reference = copy.deepcopy(model).eval()
        for param in reference.parameters():
            param.requires_grad_(False)

        def reference_fn(prompts, answers):
            with torch.no_grad():
                return _padded_logprobs(reference, prompts, answers, tokenizer.pad_token_id)

    demonstrations = []
    if config.ptx_coef > 0:
        demonstrations, _ = D.sft_examples(rows(), tokenizer, split="train", max_length=config.reward_max_length,
                                           max_response_tokens=config.reward_max_length // 2)
    attach_value_head(model, seed=config.seed)
    model.value_head.to(device)
    return PPOTask(train=train, validation=validation, config=config, tokenizer=tokenizer,
                   pad_id=tokenizer.pad_token_id, device=device, reward_fn=reward_fn, reference_fn=reference_fn,
                   demonstrations=demonstrations, precision=precision)


def _padded_logprobs(model, prompts, answers, pad_id: int) -> torch.Tensor:
    """(n, R) per-token log-probabilities of each answer after its prompt, 0 on padding."""
    from training.ml.models import answer_token_outputs

    return answer_token_outputs(model, prompts, [[a] for a in answers], pad_id=pad_id, shared_prefix=False)["logprobs"]


def _tokenizer_source(base: Path, adapter_of: Path | None) -> Path:
    """An adapter's folder has the tokenizer it was trained with; else its base has it."""
    if adapter_of is not None and not (base / "tokenizer_config.json").exists():
        return adapter_of
    return base


def _device(accelerator, device: torch.device | None) -> torch.device:
    if accelerator is not None:
        return accelerator.device
    return device or torch.device("cpu")


def _gathered(accelerator, items: list, compute: Callable[[list], list]) -> list:
    """compute(items) over several processes: each computes every world-th item, the parts are
    gathered in the items' order on every process, so all hold the same list."""
    import torch.distributed as dist

    rank, world = accelerator.process_index, accelerator.num_processes
    parts = [None] * world
    dist.all_gather_object(parts, compute(items[rank::world]) if items else [])
    out: list = [None] * len(items)
    for r, part in enumerate(parts):
        out[r::world] = part
    return out


def _shared_reward_offset(model, best, accelerator, **kwargs) -> tuple[float, float, int]:
    """reward_offset over several processes: every process computes the same offset from the
    scores of all the answers (_gathered)."""
    from training.ml.reward import score_pairs

    scores = _gathered(accelerator, list(best), lambda part: score_pairs(model, part, **kwargs))
    if not scores:
        return 0.0, 0.0, 0
    values = torch.tensor(scores)
    return float(values.mean()), float(values.std()) if len(values) > 1 else 0.0, len(values)


def _dpo_references(model, train_groups, validation, *, config, checkpoint_dir: Path, accelerator, hooks: Hooks,
                    **kwargs) -> tuple[list, list]:
    """The reference log-probabilities of the train and validation answers: the model before
    its first step (with a LoRA adapter: the adapter as loaded, nothing trained yet). Computed
    once and saved beside the checkpoints, where a resumed run finds them. On several
    processes each computes a share (_gathered); the main process alone reads and writes the
    file and tells the others whether it served, so none waits alone in a gather."""
    from training.ml.dpo import load_reference, reference_logprobs, save_reference, REFERENCE_FILE

    several = accelerator is not None and accelerator.num_processes > 1
    is_main = accelerator is None or accelerator.is_main_process
    options = dict(kwargs, tokens_per_microbatch=config.tokens_per_microbatch,
                   shared_prefix=config.share_prompt_prefix, progress=lambda: hooks.progress(0, 0))
    out = []
    hooks.say(f"the reference's log-probabilities of the answers of {len(train_groups)} training and "
              f"{len(validation)} validation prompts, computed once before the first step")
    for name, groups in (("train", train_groups), ("validation", validation)):
        path = checkpoint_dir / f"{name}-{REFERENCE_FILE}"
        reference = load_reference(path, groups) if is_main else None
        if several:
            import torch.distributed as dist

            saved = [reference is not None]
            dist.broadcast_object_list(saved, src=0)
            if saved[0] and reference is None:
                reference = load_reference(path, groups)  # the main process found it whole
        if reference is None:
            if several:
                reference = _gathered(accelerator, list(groups), lambda part: reference_logprobs(model, part, **options))
            else:
                reference = reference_logprobs(model, groups, **options)
            if is_main:
                save_reference(path, groups, reference)
        out.append(reference)
    return out[0], out[1]


def _win_rate(policy, config, rows, tokenizer, *, judge: _Judge, base: Path, adapter_of: Path | None,
              hooks: Hooks) -> dict:
    """The trained policy against the model it started from (loaded again: with LoRA the
    adapter's own base would do, but a second copy of a 135M model is cheap and the code is
    one), judged by the run's reward model on held-out prompts (training.ml.winrate)."""
    from training.ml.winrate import policy_prompts, policy_win_rate

    device = next(policy.parameters()).device
    if isinstance(config, PPOConfig):  # the limits the policy was trained with
        prompt_tokens, reward_length, reward_answer = (config.max_prompt_tokens, config.reward_max_length,
                                                       config.max_new_tokens + 1)
    elif isinstance(config, BestOfNConfig):
        prompt_tokens, reward_length, reward_answer = (config.max_length - config.max_new_tokens - 1,
                                                       config.max_length, config.max_new_tokens + 1)
    else:
        prompt_tokens, reward_length, reward_answer = (config.max_length - config.max_response_tokens,
                                                       config.max_length, config.max_response_tokens)
    prompts = policy_prompts(rows(), tokenizer, limit=config.win_rate_prompts, seed=config.seed,
                             max_prompt_tokens=prompt_tokens)
    if not prompts:
        return {"prompts": 0, "note": "no held-out prompts to sample"}
    hooks.say(f"win rate: the policy and the model it started from answer {len(prompts)} held-out prompts, "
              "judged by the reward model")
    reference = load_causal_lm_for_training(base, adapter_of=adapter_of).to(device)
    reward_model, reward_tokenizer = judge.load("policy")
    hooks.progress(0, 0)
    try:
        return policy_win_rate(policy, reference, tokenizer, reward_model, reward_tokenizer, prompts, seed=config.seed,
                               max_new_tokens=config.win_rate_max_new_tokens, reward_max_length=reward_length,
                               reward_max_response_tokens=max(reward_answer, config.win_rate_max_new_tokens + 1),
                               heartbeat=lambda: hooks.progress(0, 0))
    finally:
        del reference


def run_training(spec: RunSpec, rows: Callable[[], Iterable[dict]], *, hooks: Hooks | None = None,
                 accelerator=None, device: torch.device | None = None) -> RunOutput:
    """Train and save; `accelerator` when launched by `accelerate` (its device and processes),
    else one process on `device` (CPU by default)."""
    from training.ml.dpo import DPOTask
    from training.ml.reward import RewardTask, reward_offset
    from training.ml.sft import SFTTask

    hooks = hooks or Hooks()
    t0 = time.perf_counter()
    config = config_from_dict(spec.kind, spec.config)
    seed_everything(config.seed)
    device = _device(accelerator, device)
    precision = resolve_precision(config.precision, device)
    base = Path(spec.base_path)
    adapter_of = Path(spec.base_adapter_of) if spec.base_adapter_of else None
    tokenizer = load_tokenizer(_tokenizer_source(base, adapter_of))
    start = adapter_type(base) if adapter_of is not None else ""
    problem = adapter_start_problem(kind=spec.kind, lora=config.lora, soft_prompt=config.soft_prompt, start=start)
    if problem:
        raise TrainingDataError(f"The starting model {problem}")
    if spec.kind == "reward":
        reward_pad_token(tokenizer)
    hooks.progress(0, 0)
    train_examples, validation, data_stats = build_examples(spec.kind, config, rows, tokenizer)
    hooks.progress(0, 0)

    if spec.kind == "reward":
        model = load_reward_model_for_training(base, tokenizer=tokenizer, adapter_of=adapter_of, seed=config.seed)
    else:
        # A LoRA run on a LoRA model trains the same adapter further (unmerged), a soft-prompt run
        # on a soft prompt the same prompt; a full run merges a LoRA adapter.
        model = load_causal_lm_for_training(base, adapter_of=adapter_of, keep_adapter=config.adapter)
        model.config.pad_token_id = tokenizer.pad_token_id
    new_lora = config.lora and not hasattr(model, "peft_config")
    if new_lora:
        torch.manual_seed(config.seed)
        model = add_lora(model, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                         target_modules=config.lora_target_modules, task=spec.kind)
    elif config.soft_prompt and not hasattr(model, "peft_config"):
        model = add_soft_prompt(model, tokens=config.soft_prompt_tokens, init_text=config.soft_prompt_init,
                                tokenizer=tokenizer, task=spec.kind, seed=config.seed)
    train_layers = resolve_train_layers(config.train_layers, device=device, adapter=config.adapter)
    trained_layers = freeze_lower_layers(model, train_layers)
    data_stats["trained_layers"] = trained_layers if trained_layers > 0 else "all"
    model.to(device)
    pad_id = tokenizer.pad_token_id
    judge = _Judge(spec, device)
    if spec.kind == "reward":
        task = RewardTask(train=train_examples, validation=validation, config=config, pad_id=pad_id, device=device,
                          precision=precision)
    elif spec.kind == "best_of_n":
        kept, data_stats["best_of_n"] = _best_of_n_examples(model, spec, config, tokenizer, train_examples,
                                                            judge=judge, hooks=hooks)
        data_stats["train"].update(examples=len(kept))
        task = SFTTask(train=kept, validation=validation, config=config, pad_id=pad_id, device=device,
                       precision=precision)
    elif spec.kind == "ppo":
        task = _ppo_task(model, config, rows, tokenizer, train_examples, validation, judge=judge, device=device,
                         precision=precision, new_lora=new_lora)
    elif spec.kind == "dpo":
        train_reference, validation_reference = _dpo_references(
            model, train_examples, validation, config=config, checkpoint_dir=Path(spec.checkpoint_dir),
            accelerator=accelerator, hooks=hooks, pad_id=pad_id, device=device, precision=precision)
        task = DPOTask(train=train_examples, validation=validation, config=config, pad_id=pad_id, device=device,
                       precision=precision, train_reference=train_reference,
                       validation_reference=validation_reference)
    else:
        task = SFTTask(train=train_examples, validation=validation, config=config, pad_id=pad_id, device=device,
                       precision=precision)
    task.heartbeat = lambda: hooks.progress(0, 0)  # evaluations of big splits take minutes: stay alive
    t1 = time.perf_counter()
    result = train(model=model, task=task, config=config, checkpoint_dir=Path(spec.checkpoint_dir), hooks=hooks,
                   accelerator=accelerator)
    t2 = time.perf_counter()

    several = accelerator is not None and accelerator.num_processes > 1
    offset = None
    if spec.kind == "reward" and config.normalize:
        best = D.best_answers(rows(), tokenizer, split="train", max_length=config.max_length,
                              max_response_tokens=config.max_response_tokens)
        if len(best) > config.normalize_answers:
            best = random.Random(config.seed).sample(best, config.normalize_answers)
        hooks.say(f"normalising: scoring {len(best)} of the training split's best answers, whose mean becomes 0")
        if several:
            mean, std, count = _shared_reward_offset(model, best, accelerator, pad_id=pad_id, device=device,
                                                     precision=precision,
                                                     tokens_per_microbatch=config.tokens_per_microbatch)
        else:
            mean, std, count = reward_offset(model, best, pad_id=pad_id, device=device, precision=precision,
                                             tokens_per_microbatch=config.tokens_per_microbatch)
        offset = {"mean": round(mean, 6), "std": round(std, 6), "answers": count}
    is_main = accelerator is None or accelerator.is_main_process
    win_rate = None
    if spec.kind == "ppo":
        from training.ml.ppo import detach_value_head

        detach_value_head(model)  # the policy is saved (and judged) as a plain causal LM
    if is_main and spec.kind in POLICY_KINDS and spec.reward_model_path and config.win_rate_prompts:
        win_rate = _win_rate(model, config, rows, tokenizer, judge=judge, base=base, adapter_of=adapter_of, hooks=hooks)
    if is_main:  # the others hold the same weights (the trainer's replica_difference says how close)
        save_trained(model, tokenizer, Path(spec.output_dir),
                     reward_offset=(offset or {}).get("mean", 0.0) if spec.kind == "reward" else None)
    if several:
        accelerator.wait_for_everyone()  # the model is whole on disk before any process returns
    t3 = time.perf_counter()
    metrics = {k: v for k, v in result.final_metrics.items()}
    if result.history:
        metrics["train/loss"] = result.history[-1].get("loss")
    metrics["steps"] = result.steps
    if win_rate:
        metrics.update({f"win_rate/{k}": v for k, v in win_rate.items() if k not in ("examples", "sampling")})
    return RunOutput(config=config, result=result, data=data_stats, output_dir=Path(spec.output_dir), metrics=metrics,
                     device=f"{device} ({precision})", adapter=config.adapter, reward_offset=offset, win_rate=win_rate,
                     seconds={"prepare": round(t1 - t0, 2), "train": round(t2 - t1, 2), "save": round(t3 - t2, 2)})
