"""Benchmark: DPO training (ours) against TRL's DPOTrainer, in the same run, on the default model
and the real FineGrainedRLHF K=4 feedback.

    .venv/bin/python bench/dpo.py [--prompts N] [--val-prompts N] [--epochs 1] [--max-steps N]
        [--max-length 512] [--seed 0] [--device cpu|cuda] [--tokens-per-microbatch N]
        [--checkpoint-every N] [--trl-reference precompute|live] [--skip-trl] [--json PATH]

TRL is a benchmark-only dependency: `pip install -r requirements-bench.txt`.

Data: ../shared/data/fgrlhf_qa_dev_feedback.json (500 questions with passages, 4 answers, 6
pairwise human preferences) is imported with the product's importer into a private SQLite
database in a temporary data directory (nothing of the user's is touched), snapshotted (split by
prompt, 10% validation) and read back: the training rows are exactly what a user who imported
the file and pressed Train would train on. --prompts subsamples the training prompts (seeded);
the validation split is always the snapshot's (--val-prompts subsamples it for smoke tests).

The two sides, one after the other in this process, on the same model, token ids, steps and seed:
- ours: run_training(kind="dpo") with the default DPOConfig (the CLI overrides only epochs,
  max_length, max_steps, seed, and tokens_per_microbatch / checkpoint_every when given): the
  reference's log-probabilities of every training answer are computed once before the first
  step (the prompt encoded once, its K answers on its KV cache) and cached; each step takes
  prompts_per_step prompts and runs one forward per candidate answer on the shared prompt
  encoding; the sigmoid DPO loss over every untied pair of each ranking, averaged per prompt.
- TRL: trl.DPOTrainer on the same pairs (every untied pair of each training prompt's consensus
  ranking, one row per pair), given as pre-tokenized `prompt_ids`/`chosen_ids`/`rejected_ids`
  = our prompt tokens and our answer tokens: TRL 1.16's own preparation only tokenizes text, so
  `_prepare_dataset` is overridden to pass our ids through (its filter of prompts that fill
  max_length is kept; it drops nothing here). Truncation is therefore ours: the prompt cut from
  the left so that the group's longest answer fits whole up to max_response_tokens, the answers
  kept whole (each ends with the end-of-turn token, so TRL's EOS would change nothing); TRL's
  own `max_length` (keep_start) then cuts nothing (counted and reported). TRL runs a chosen and
  a rejected sequence (prompt + answer) per pair. Settings: `precompute_ref_log_probs=True` by
  default (--trl-reference live keeps a second, frozen reference model and runs it in every
  step): its fastest a user would pick, no reference model in memory while training, and it
  works offline on a CPU in this version; the precompute (with the model hash TRL takes to key
  its cache) runs inside DPOTrainer's constructor and is timed there, as our reference pass is
  timed inside run_training. Gradient checkpointing off (TRL's default is on; ours keeps
  activations), bf16 off (TRL's default is on; ours is fp32 on a CPU), the Trainer's default
  random sampler (padding measured ~7% of its forward tokens on this data: length grouping
  would gain little, and its descending order biases a run cut short by --max-steps).
  Same base weights (our loader), the same lower layers frozen (resolve_train_layers /
  freeze_lower_layers: train_layers "auto" is the top 12 of 30 on a CPU; SmolLM2 ties its
  output head to the frozen embeddings, so neither side trains it), learning rate, warm-up
  ratio, cosine schedule, AdamW betas/eps/weight decay (fused), gradient clipping, beta,
  sigmoid loss, fp32, seed, checkpoint cadence and padded-token budget per forward; the same
  number of optimizer steps (TRL's max_steps = ours), each holding our prompts_per_step times
  the mean pairs per prompt as pairs-per-micro-batch x accumulation.
Timed: each side's reference pass (ours: _dpo_references; TRL: its model hash + precompute)
and its training steps (first step's start to last step's end: our TrainSpan hooks, a
TrainerCallback for TRL; Trainer.train() as a whole is reported too), after an untimed warm-up
forward/backward so that neither side pays the process's one-time costs. Not timed: data
preparation, model loading, saving, evaluation. Both reference passes cover every training
answer, also when --max-steps stops the run before all were trained on.
pairs/s = training pairs the steps processed / (reference pass + steps) seconds, and over the
steps alone.

Held-out preference accuracy of the untrained model, ours and TRL's on the same validation
pairs, all scored by ONE function: training.ml.dpo.reference_logprobs (answer_logprobs in
token-budgeted micro-batches, no gradient, fp32) with shared_prefix=False, i.e. each answer
with its own copy of the prompt as a plain forward (the way TRL computes them, so our
shared-prefix path favours neither), applied to each saved model and to the base model (the
reference of both). A pair is right when the implicit reward beta*(logp_policy - logp_ref) of
the chosen answer exceeds the rejected's; a tie counts half (the untrained model: every pair
ties, 0.5 exactly). 95% intervals: bootstrap over prompts
(training.ml.evaluation.accuracy_with_interval); ours - TRL with a paired bootstrap.
The last line printed is a JSON object with every figure (--json PATH also writes it).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import random
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA_FILE = ROOT.parent / "shared" / "data" / "fgrlhf_qa_dev_feedback.json"
IMPORT_FORMAT = "fgrlhf"


from bench.common import (TrainSpan, config_from_args, device_and_base, emit_summary, free_memory,  # noqa: E402
                          import_and_snapshot, preference_items_taken, require_trl, scratch_dir, setup_django,
                          sync)


class Clock:
    """Wall and this process's CPU seconds of what runs inside `with`, added up over uses."""

    def __init__(self, device):
        self.device = device
        self.wall = self.cpu = 0.0
        self.calls = 0

    def __enter__(self):
        sync(self.device)
        self._start = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.wall += time.perf_counter() - self._start[0]
        self.cpu += time.process_time() - self._start[1]
        self.calls += 1


def fingerprint(model) -> str:
    """A short digest of the embeddings and the top layer's first weight: equal starting points
    print the same."""
    import hashlib

    named = dict(model.named_parameters())
    embed = next(p for n, p in named.items() if "embed" in n).detach().float().cpu().numpy()
    top = [n for n in named if ".layers." in n]
    last = max(int(n.split(".layers.")[1].split(".")[0]) for n in top)
    weight = next(p for n, p in named.items() if f".layers.{last}." in n).detach().float().cpu().numpy()
    return hashlib.sha256(embed[:64].tobytes() + weight.tobytes()).hexdigest()[:12]


def our_total_steps(groups, cfg) -> int:
    """The optimizer steps run_training will take (trainer.total_steps over DPOTask's plan)."""
    from training.ml.trainer import total_steps

    return total_steps(n_steps_per_epoch=math.ceil(len(groups) / cfg.prompts_per_step), config=cfg)


def warm_up(model, groups, *, pad_id: int, device) -> None:
    """One untimed forward and backward through each path (answer log-probabilities on a shared
    prefix and one sequence per answer, transformers' forward) on two prompts: the process's
    one-time costs (thread pools, kernel set-up, allocator growth) are paid here, not by
    whichever side runs first."""
    import torch

    from training.ml.models import answer_logprobs

    model.to(device).train()
    sample = groups[:1]
    prompts, responses = [g.prompt_ids for g in sample], [g.responses for g in sample]
    for shared in (True, False):
        answer_logprobs(model, prompts, responses, pad_id=pad_id, shared_prefix=shared)[0].sum().backward()
    ids = torch.tensor([list(sample[0].prompt_ids + r) for r in sample[0].responses[:1]], device=device)
    model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[:, -8:].sum().backward()
    model.zero_grad(set_to_none=True)
    sync(device)


def fmt_acc(acc: dict | None) -> str:
    if not acc or acc.get("accuracy") is None:
        return "-"
    low, high = acc["accuracy_ci"]
    return f"{acc['accuracy']:.3f} [{low:.3f}, {high:.3f}]"


# --- Validation: one scorer for every model -------------------------------------------------------

def answer_scores(model_dir: Path, groups, *, pad_id: int, device, token_budget: int) -> list:
    """Per group, its answers' (summed log-probabilities, token counts) under the causal LM saved
    in `model_dir`: each answer with its own copy of the prompt (a plain forward), fp32, no
    gradient. The same function for the base, our model and TRL's."""
    from training.ml.dpo import reference_logprobs
    from training.ml.models import load_causal_lm_for_training

    model = load_causal_lm_for_training(model_dir).to(device)
    scores = reference_logprobs(model, groups, pad_id=pad_id, device=device, precision="fp32",
                                tokens_per_microbatch=token_budget, shared_prefix=False)
    del model
    free_memory()
    return scores


def preference_accuracy(policy: list, reference: list, groups, *, beta: float, seed: int) -> dict:
    """Implicit-reward preference accuracy of `policy` against `reference` on `groups`' pairs:
    right when beta*(logp - logp_ref) of the chosen answer exceeds the rejected's, a tie half;
    with the DPO (sigmoid) loss and reward margin averaged over pairs."""
    from training.ml.evaluation import accuracy_with_interval

    per_prompt, losses, margins = [], [], []
    for g, (logps, _), (ref_logps, _) in zip(groups, policy, reference):
        correct = 0.0
        for i, j, _margin in g.pairs:
            h = (logps[i] - ref_logps[i]) - (logps[j] - ref_logps[j])
            correct += 1.0 if h > 0 else 0.5 if h == 0 else 0.0
            z = beta * h
            losses.append(max(-z, 0.0) + math.log1p(math.exp(-abs(z))))  # softplus(-z) = -log sigmoid(z)
            margins.append(z)
        per_prompt.append((correct, len(g.pairs)))
    return {**accuracy_with_interval(per_prompt, seed=seed), "loss": round(statistics.mean(losses), 6),
            "reward_margin": round(statistics.mean(margins), 6), "per_prompt": per_prompt}


def paired_difference(a: list[tuple[float, int]], b: list[tuple[float, int]], *, seed: int) -> dict:
    """Accuracy of A minus accuracy of B on the same prompts' pairs, with a 95% percentile
    bootstrap over prompts drawn together for both (paired: a prompt's pairs move together)."""
    import numpy as np

    correct_a = np.array([c for c, _ in a], dtype=np.float64)
    correct_b = np.array([c for c, _ in b], dtype=np.float64)
    counts = np.array([n for _, n in a], dtype=np.float64)
    difference = float((correct_a.sum() - correct_b.sum()) / counts.sum())
    draws = np.random.default_rng(seed).integers(0, len(a), size=(2000, len(a)))
    resampled = (correct_a[draws].sum(axis=1) - correct_b[draws].sum(axis=1)) / counts[draws].sum(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"difference": round(difference, 6), "ci": [round(float(low), 6), round(float(high), 6)],
            "ci_method": "paired bootstrap over prompts (2000 resamples)"}


# --- The two sides --------------------------------------------------------------------------------

def rates(result: dict) -> dict:
    """pairs/s and prompts/s over the reference pass + steps, and over the steps alone."""
    total = result["reference_seconds"] + result["steps_seconds"]
    result.update(total_seconds=total, pairs_per_s=result["pairs"] / total,
                  pairs_per_s_steps=result["pairs"] / result["steps_seconds"],
                  prompts_per_s=result["prompts"] / total)
    return result


def run_ours(*, base: Path, rows: list[dict], config: dict, groups, device, work: Path) -> dict:
    """run_training(kind="dpo") on the training rows; only train rows are given, so neither the
    reference pass nor train() touches validation (scored afterwards, the same for both)."""
    import training.ml.run as run_module
    from training.ml.run import RunSpec, run_training

    span = TrainSpan(device)
    reference = Clock(device)
    original = run_module._dpo_references

    def timed_references(*args, **kwargs):
        with reference:
            return original(*args, **kwargs)

    out_dir, ckpt_dir = work / "ours" / "model", work / "ours" / "checkpoints"
    spec = RunSpec(kind="dpo", base_path=str(base), config=config, output_dir=str(out_dir),
                   checkpoint_dir=str(ckpt_dir))
    run_module._dpo_references = timed_references
    try:
        output = run_training(spec, lambda: iter(rows), hooks=span.hooks(), device=device)
    finally:
        run_module._dpo_references = original
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    history = output.result.history
    cfg = output.config
    taken = preference_items_taken(groups, cfg, steps=len(history))
    pairs = sum(len(groups[i].pairs) for i in taken)
    policy_tokens = sum(len(groups[i].prompt_ids) + sum(len(r) for r in groups[i].responses) for i in taken)
    reference_tokens = sum(len(g.prompt_ids) + sum(len(r) for r in g.responses) for g in groups)

    def last(name):
        values = [h[name] for h in history if h.get(name) is not None]
        return statistics.mean(values[-10:]) if values else None

    return rates({
        "variant": "ours", "model_dir": str(out_dir), "steps": len(history), "prompts": len(taken), "pairs": pairs,
        "pairs_per_step": pairs / max(len(history), 1),
        "reference_seconds": reference.wall, "reference_cpu_seconds": reference.cpu,
        "steps_seconds": span.end[0] - span.start[0], "steps_cpu_seconds": span.end[1] - span.start[1],
        "run_training_seconds": output.seconds,
        "tokens_encoded": policy_tokens, "reference_tokens_encoded": reference_tokens,
        "checkpoints": span.checkpoints,
        "train_loss_last": last("loss"), "train_accuracy_last": last("accuracy"),
        "train_reward_margin_last": last("reward_margin"),
        "train_what": "DPO loss averaged per prompt / implicit-reward accuracy / margin, mean of the last <=10 steps",
        "data": output.data["train"], "device": output.device,
    })


def trl_batch_shape(target_pairs: float, cap: int) -> tuple[int, int]:
    """(pairs per micro-batch, accumulation steps) closest to `target_pairs` per optimizer step
    with at most `cap` pairs per micro-batch."""
    accumulation = max(1, math.ceil(target_pairs / cap))
    return max(1, min(cap, round(target_pairs / accumulation))), accumulation


def run_trl(*, base: Path, groups, dpo_config, steps: int, device, precision: str, work: Path,
            reference_mode: str) -> dict:
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    import trl.trainer.dpo_trainer as trl_dpo
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    from training.ml.models import (
        freeze_lower_layers,
        load_causal_lm_for_training,
        load_tokenizer,
        resolve_train_layers,
    )

    disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*gradient_checkpointing.*")
    os.environ["TQDM_DISABLE"] = "1"  # TRL's precompute progress bar
    cfg = dpo_config
    rows = [(g.prompt_ids, g.responses[i], g.responses[j]) for g in groups for i, j, _ in g.pairs]
    lengths = [len(p) + max(len(c), len(r)) for p, c, r in rows]
    too_long = sum(1 for n in lengths if n > cfg.max_length)
    target = cfg.prompts_per_step * len(rows) / len(groups)
    per_device, accumulation = trl_batch_shape(target, max(1, cfg.tokens_per_microbatch // (2 * max(lengths))))
    dataset = Dataset.from_dict({"prompt_ids": [list(p) for p, _, _ in rows],
                                 "chosen_ids": [list(c) for _, c, _ in rows],
                                 "rejected_ids": [list(r) for _, _, r in rows]})
    epoch_steps = math.ceil(math.ceil(len(rows) / per_device) / accumulation)

    tokenizer = load_tokenizer(base)
    model = load_causal_lm_for_training(base)
    model.config.pad_token_id = tokenizer.pad_token_id
    start_fingerprint = fingerprint(model)
    # The same trainable weights as ours (train_layers "auto" freezes the lower layers on a CPU).
    trained_layers = freeze_lower_layers(model, resolve_train_layers(cfg.train_layers, device=device, adapter=cfg.adapter))
    saving = {"save_strategy": "steps", "save_steps": cfg.checkpoint_every, "save_total_limit": cfg.keep_checkpoints}
    # TRL's default is activation (gradient) checkpointing on; ours keeps activations, so it is off.
    fields = TRLDPOConfig.__dataclass_fields__
    recompute_field = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    args = TRLDPOConfig(
        output_dir=str(work / "trl" / "checkpoints"), seed=cfg.seed, num_train_epochs=cfg.epochs,
        max_steps=steps, learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_schedule,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, optim="adamw_torch_fused", adam_beta1=0.9,
        adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=cfg.max_grad_norm, per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation, max_length=cfg.max_length, truncation_mode="keep_start",
        beta=cfg.beta, loss_type=[cfg.loss], label_smoothing=cfg.label_smoothing,
        precompute_ref_log_probs=reference_mode == "precompute", **{recompute_field: False},
        bf16=precision == "bf16", fp16=False, use_cpu=device.type == "cpu", logging_steps=1, disable_tqdm=True,
        report_to="none", dataloader_num_workers=0, dataloader_pin_memory=device.type == "cuda",
        eval_strategy="no", **saving,
    )
    if cfg.lr_schedule == "constant":
        args.lr_scheduler_type = "constant_with_warmup"

    seen = {"pairs": 0, "tokens": 0, "padded_tokens": 0, "longest": 0, "cut": 0}
    span: dict[str, tuple[float, float]] = {}

    class Steps(TrainerCallback):
        """The steps' span (as TrainSpan for ours: first step's start to last step's end), and
        checkpoints where ours writes them: every `checkpoint_every` steps and at the end of
        every epoch but never after the last step (ours leaves the finished model to the caller,
        outside the timing; Trainer would save a checkpoint there). Counts them."""

        saves = 0

        def on_step_begin(self, args, state, control, **kwargs):
            if "start" not in span:
                sync(device)
                span["start"] = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            span["end"] = (time.perf_counter(), time.process_time())
            if state.global_step >= state.max_steps:
                control.should_save = False

        def on_epoch_end(self, args, state, control, **kwargs):
            if state.global_step < state.max_steps:
                control.should_save = True

        def on_save(self, *args, **kwargs):
            Steps.saves += 1

    class BenchDPOTrainer(DPOTrainer):
        """DPOTrainer on our token ids, counting what each training micro-batch holds."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            # TRL 1.16 only tokenizes text; these rows are already our token ids. Its one
            # filter is kept: a prompt that fills max_length would leave no answer token.
            if args.max_length is not None and args.truncation_mode == "keep_start":
                dataset = dataset.filter(lambda example: len(example["prompt_ids"]) < args.max_length)
            return dataset

        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training:
                mask = inputs["attention_mask"]
                seen["pairs"] += mask.shape[0] // 2
                seen["tokens"] += int(mask.sum())
                seen["padded_tokens"] += mask.numel()
                seen["longest"] = max(seen["longest"], mask.shape[1])
            return super().compute_loss(model, inputs, *args, **kwargs)

    # The reference pass: TRL hashes the model (its precompute cache key) and precomputes in
    # its constructor; both are timed.
    reference, hashing = Clock(device), Clock(device)
    original_hash = trl_dpo.hash_module
    original_precompute = DPOTrainer._precompute_ref_logps

    def timed_hash(module):
        with reference, hashing:
            return original_hash(module)

    def timed_precompute(self, *a, **k):
        with reference:
            return original_precompute(self, *a, **k)

    trl_dpo.hash_module = timed_hash
    BenchDPOTrainer._precompute_ref_logps = timed_precompute
    t0 = time.perf_counter()
    try:
        trainer = BenchDPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                  callbacks=[Steps()])
    finally:
        trl_dpo.hash_module = original_hash
    construct_s = time.perf_counter() - t0
    print(f"  DPOTrainer() {construct_s:.1f} s, of which its reference pass {reference.wall:.1f} s; training ...",
          flush=True)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    dropped = len(rows) - len(trainer.train_dataset)
    sync(device)
    w0 = time.perf_counter()
    trainer.train()
    sync(device)
    train_wall = time.perf_counter() - w0
    out_dir = work / "trl" / "model"
    trainer.save_model(str(out_dir))
    shutil.rmtree(work / "trl" / "checkpoints", ignore_errors=True)
    log = trainer.state.log_history

    def last(name):
        values = [h[name] for h in log if name in h]
        return statistics.mean(values[-10:]) if values else None

    done = trainer.state.global_step
    reference_tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in rows) if reference_mode == "precompute" else 0
    result = rates({
        "variant": "trl", "model_dir": str(out_dir), "steps": done, "pairs": seen["pairs"],
        "prompts": seen["pairs"] * len(groups) / len(rows), "prompts_what": "pairs trained x train prompts / pairs",
        "pairs_per_step": seen["pairs"] / max(done, 1),
        "reference_seconds": reference.wall, "reference_cpu_seconds": reference.cpu,
        "reference_mode": reference_mode, "reference_hash_seconds": hashing.wall,
        "steps_seconds": span["end"][0] - span["start"][0], "steps_cpu_seconds": span["end"][1] - span["start"][1],
        "trainer_train_seconds": train_wall, "trainer_construct_seconds": construct_s,
        "tokens_encoded": seen["tokens"], "reference_tokens_encoded": reference_tokens,
        "padding_share": 1 - seen["tokens"] / max(seen["padded_tokens"], 1), "longest_forward": seen["longest"],
        "checkpoints": Steps.saves,
        "train_loss_last": last("loss"), "train_accuracy_last": last("rewards/accuracies"),
        "train_reward_margin_last": last("rewards/margins"),
        "train_what": "DPO loss averaged per pair / rewards/accuracies / rewards/margins, mean of the last <=10 steps",
        "pairs_per_microbatch": per_device, "gradient_accumulation": accumulation, "epoch_steps": epoch_steps,
        "target_pairs_per_step": target, "train_pairs": len(rows), "pairs_too_long": too_long,
        "pairs_dropped_by_trl": dropped, "start_fingerprint": start_fingerprint, "trained_layers": trained_layers,
        "optimizer": getattr(args.optim, "value", str(args.optim)), "bf16": bool(args.bf16),
        "gradient_checkpointing": bool(getattr(args, recompute_field)),
        "precompute_ref_batch_size": args.precompute_ref_batch_size or per_device,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    })
    del trainer, model
    free_memory()
    return result


# --- Main -----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=0, help="train prompts (seeded subsample; default all)")
    parser.add_argument("--val-prompts", type=int, default=0, help="validation prompts (default all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=0, help="prompt + answer tokens (default: DPOConfig's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokens-per-microbatch", type=int, default=0,
                        help="padded tokens per forward pass for both sides (default: DPOConfig's; raise it on a GPU)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop both sides after this many steps")
    parser.add_argument("--device", default=os.environ.get("STUDIO_DEVICE", ""), help="cpu, cuda (default: auto)")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="checkpoint cadence for both sides (default: DPOConfig's)")
    parser.add_argument("--trl-reference", choices=("precompute", "live"), default="precompute",
                        help="TRL's reference: precompute_ref_log_probs=True (default), or a second model run "
                             "every step")
    parser.add_argument("--data", default=str(DATA_FILE), help="the fgrlhf JSON file")
    parser.add_argument("--model", default="", help="a HF model directory (default: the converted default model)")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--json", default="", help="also write the final JSON object here")
    args = parser.parse_args()

    require_trl(args)

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    scratch = scratch_dir("bench-dpo-")
    try:
        setup_django(str(scratch / "data"))
        import torch
        from training.ml.config import DPOConfig
        from training.ml.data import reward_groups
        from training.ml.models import (
            freeze_lower_layers,
            load_causal_lm_for_training,
            load_tokenizer,
            resolve_precision,
            resolve_train_layers,
        )

        device, base = device_and_base(args)

        cfg, notes = config_from_args(DPOConfig, args)
        config = cfg.as_dict()  # what both sides are given
        precision = resolve_precision(cfg.precision, device)

        t0 = time.perf_counter()
        rows, data_info = import_and_snapshot(Path(args.data), IMPORT_FORMAT)
        prepare_s = time.perf_counter() - t0
        tokenizer = load_tokenizer(base)
        pad_id = tokenizer.pad_token_id

        def make(split: str, subset: list[dict]):
            # What run_training's build_examples builds for kind "dpo".
            return reward_groups(subset, tokenizer, split=split, max_length=cfg.max_length,
                                 max_response_tokens=cfg.max_response_tokens, labels=cfg.labels)

        train_all, _ = make("train", rows)
        validation, _ = make("validation", rows)
        rng = random.Random(args.seed)
        if args.prompts and args.prompts < len(train_all):
            chosen = {g.prompt_id for g in rng.sample(train_all, args.prompts)}
        else:
            chosen = {g.prompt_id for g in train_all}
        if args.val_prompts and args.val_prompts < len(validation):
            validation = sorted(random.Random(args.seed + 1).sample(validation, args.val_prompts),
                                key=lambda g: g.prompt_id)
        train_rows = [r for r in rows if r["split"] == "train" and r["prompt_id"] in chosen]
        groups, train_stats = make("train", train_rows)  # exactly what run_training builds from these rows
        n_pairs = sum(len(g.pairs) for g in groups)
        steps = our_total_steps(groups, cfg)

        print(f"model {base.name} on {device} ({precision}); torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads, {platform.processor() or platform.machine()}"
              + (f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
        print(f"data: {data_info['file']} imported ({data_info['import_counts']}) and snapshotted "
              f"({data_info['snapshot_split']}) in {prepare_s:.1f} s")
        print(f"train: {len(groups)} prompts, {n_pairs} pairs ({n_pairs / len(groups):.2f} per prompt), "
              f"{train_stats.truncated_prompts} prompts cut from the left to fit max_length {cfg.max_length}, "
              f"{train_stats.truncated_responses} answers cut to {cfg.max_response_tokens}; validation: "
              f"{len(validation)} prompts, {sum(len(g.pairs) for g in validation)} pairs")
        print(f"config: epochs {cfg.epochs}, steps {steps}, prompts_per_step {cfg.prompts_per_step}, beta {cfg.beta} "
              f"({cfg.loss}), lr {cfg.learning_rate} ({cfg.lr_schedule}, warm-up {cfg.warmup_ratio}), max_length "
              f"{cfg.max_length}, max_response_tokens {cfg.max_response_tokens}, tokens_per_microbatch "
              f"{cfg.tokens_per_microbatch}, train_layers {cfg.train_layers}, checkpoint_every {cfg.checkpoint_every}, "
              f"seed {cfg.seed}" + (f", max_steps {cfg.max_steps}" if cfg.max_steps else "")
              + ("; " + "; ".join(notes) if notes else ""))

        warmup_steps = math.ceil(cfg.warmup_ratio * steps)
        if steps <= warmup_steps:
            notes.append(f"{steps} step(s) are all warm-up: the first step of every run has learning rate 0 (both "
                         f"sides), so nothing trains; use --max-steps 2 or more to see the models move")
            print(f"note: {notes[-1]}")
        load_before = os.getloadavg()
        work = scratch / "runs"
        start = load_causal_lm_for_training(base)
        start_fingerprint = fingerprint(start)
        freeze_lower_layers(start, resolve_train_layers(cfg.train_layers, device=device, adapter=cfg.adapter))
        t0 = time.perf_counter()
        warm_up(start, groups, pad_id=pad_id, device=device)
        print(f"warm-up (untimed): {time.perf_counter() - t0:.1f} s", flush=True)
        del start
        free_memory()

        results: dict[str, dict] = {}
        print("training: ours ...", flush=True)
        results["ours"] = run_ours(base=base, rows=train_rows, config=dict(config), groups=groups, device=device,
                                   work=work)
        print(f"  reference pass {results['ours']['reference_seconds']:.1f} s, {results['ours']['steps']} steps "
              f"{results['ours']['steps_seconds']:.1f} s", flush=True)
        free_memory()
        if not args.skip_trl:
            print(f"training: TRL DPOTrainer (reference: {args.trl_reference}) ...", flush=True)
            results["trl"] = run_trl(base=base, groups=groups, dpo_config=cfg, steps=results["ours"]["steps"],
                                     device=device, precision=precision, work=work,
                                     reference_mode=args.trl_reference)
            print(f"  {results['trl']['steps']} steps {results['trl']['steps_seconds']:.1f} s", flush=True)
            if results["trl"]["start_fingerprint"] != start_fingerprint:
                print("WARNING: TRL's starting weights differ from ours")

        print("validation ...", flush=True)
        budget = cfg.tokens_per_microbatch
        t0 = time.perf_counter()
        reference = answer_scores(base, validation, pad_id=pad_id, device=device, token_budget=budget)
        accuracy = {"start": preference_accuracy(reference, reference, validation, beta=cfg.beta, seed=cfg.seed)}
        for name, r in results.items():
            scores = answer_scores(Path(r["model_dir"]), validation, pad_id=pad_id, device=device,
                                   token_budget=budget)
            accuracy[name] = preference_accuracy(scores, reference, validation, beta=cfg.beta, seed=cfg.seed)
            r["validation"] = {k: v for k, v in accuracy[name].items() if k != "per_prompt"}
        validation_s = time.perf_counter() - t0
        load_after = os.getloadavg()

        labels = {"ours": "ours (cached reference, K answers on one prompt encoding)",
                  "trl": f"TRL DPOTrainer ({'precomputed' if args.trl_reference == 'precompute' else 'live'} "
                         f"reference, chosen + rejected per pair)"}
        print()
        print("| variant | steps | pairs | reference s | steps s | total s | pairs/s (incl. reference) "
              "| pairs/s (steps) | train loss | val accuracy [95% CI] | val DPO loss | val reward margin |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
        print(f"| untrained (the reference) | 0 | - | - | - | - | - | - | - | {fmt_acc(accuracy['start'])} | "
              f"{accuracy['start']['loss']:.4f} | {accuracy['start']['reward_margin']:+.4f} |")
        for name, r in results.items():
            loss = f"{r['train_loss_last']:.4f}" if r["train_loss_last"] is not None else "-"
            print(f"| {labels[name]} | {r['steps']} | {r['pairs']} | {r['reference_seconds']:.1f} | "
                  f"{r['steps_seconds']:.1f} | {r['total_seconds']:.1f} | {r['pairs_per_s']:.3f} | "
                  f"{r['pairs_per_s_steps']:.3f} | {loss} | {fmt_acc(accuracy[name])} | "
                  f"{accuracy[name]['loss']:.4f} | {accuracy[name]['reward_margin']:+.4f} |")
        print()
        val = accuracy["start"]
        print(f"Validation ({validation_s:.0f} s): {val['pairs']} pairs of {val['prompts']} prompts (untied pairs of "
              f"each prompt's consensus ranking), every model scored by the same function (plain forward per answer, "
              f"fp32) against the base model; a tie counts half; 95% CI by {val['ci_method']}. pairs/s = training "
              f"pairs the steps processed / (reference pass + steps); the reference passes cover all "
              f"{n_pairs} training pairs. Load average before training {load_before[0]:.1f}, after validation "
              f"{load_after[0]:.1f} ({os.cpu_count()} CPUs): other work on the machine slows both sides' wall time.")
        ours = results["ours"]
        print(f"ours: reference pass {ours['reference_seconds']:.1f} s ({ours['reference_tokens_encoded']} tokens: "
              f"P + K*R per prompt), steps {ours['steps_seconds']:.1f} s ({ours['pairs_per_step']:.1f} pairs, "
              f"{cfg.prompts_per_step} prompts per step; {ours['tokens_encoded']} policy tokens encoded), "
              f"run_training phases {ours['run_training_seconds']}, checkpoints {ours['checkpoints']}.")
        ratios = {}
        if "trl" in results:
            trl = results["trl"]
            ratios["ours_vs_trl_pairs_per_s"] = ours["pairs_per_s"] / trl["pairs_per_s"]
            ratios["ours_vs_trl_pairs_per_s_steps"] = ours["pairs_per_s_steps"] / trl["pairs_per_s_steps"]
            ratios["ours_vs_trl_cpu_s_per_pair"] = (
                (trl["reference_cpu_seconds"] + trl["steps_cpu_seconds"]) / trl["pairs"]) / (
                (ours["reference_cpu_seconds"] + ours["steps_cpu_seconds"]) / ours["pairs"])
            if trl["reference_seconds"] > 0:
                ratios["ours_vs_trl_reference_seconds"] = trl["reference_seconds"] / max(ours["reference_seconds"],
                                                                                        1e-9)
            paired = paired_difference(accuracy["ours"]["per_prompt"], accuracy["trl"]["per_prompt"], seed=cfg.seed)
            ratios["accuracy_ours_minus_trl"] = paired
            goal = ratios["ours_vs_trl_pairs_per_s"] >= 1.5
            print(f"TRL: reference pass {trl['reference_seconds']:.1f} s ({trl['reference_mode']}, of which "
                  f"{trl['reference_hash_seconds']:.1f} s hashing the model for its cache key; "
                  f"{trl['reference_tokens_encoded']} tokens: 2*P + R_chosen + R_rejected per pair), steps "
                  f"{trl['steps_seconds']:.1f} s ({trl['tokens_encoded']} policy tokens encoded, padding "
                  f"{100 * trl['padding_share']:.1f}%), Trainer.train() {trl['trainer_train_seconds']:.1f} s, "
                  f"DPOTrainer() {trl['trainer_construct_seconds']:.1f} s, checkpoints {trl['checkpoints']}.")
            print(f"ours / TRL: {ratios['ours_vs_trl_pairs_per_s']:.2f}x pairs/s including each side's reference "
                  f"pass, {ratios['ours_vs_trl_pairs_per_s_steps']:.2f}x over the steps alone, "
                  f"{ratios['ours_vs_trl_cpu_s_per_pair']:.2f}x per CPU second; validation accuracy "
                  f"{accuracy['ours']['accuracy']:.3f} vs {accuracy['trl']['accuracy']:.3f} (difference "
                  f"{paired['difference']:+.3f}, paired 95% CI [{paired['ci'][0]:+.3f}, {paired['ci'][1]:+.3f}]). "
                  f"Goal (>= 1.5x TRL's pairs/s): {'met' if goal else 'NOT met'}.")
            print(f"TRL setup: {trl['pairs_per_microbatch']} pairs per micro-batch x {trl['gradient_accumulation']} "
                  f"accumulation = {trl['pairs_per_microbatch'] * trl['gradient_accumulation']} pairs per optimizer "
                  f"step (ours: {cfg.prompts_per_step} prompts = {trl['target_pairs_per_step']:.1f} pairs on average; "
                  f"measured {trl['pairs_per_step']:.1f} vs {ours['pairs_per_step']:.1f}); max_steps {steps} (its "
                  f"epoch is {trl['epoch_steps']} steps, ours {math.ceil(len(groups) / cfg.prompts_per_step)}); "
                  f"pairs longer than max_length {trl['pairs_too_long']}, dropped by TRL's filter "
                  f"{trl['pairs_dropped_by_trl']}; longest forward {trl['longest_forward']} tokens; precompute batch "
                  f"{trl['precompute_ref_batch_size']} pairs; optimizer {trl['optimizer']}, gradient checkpointing "
                  f"{'on' if trl['gradient_checkpointing'] else 'off'} (TRL's default is on), bf16 {trl['bf16']}; "
                  f"trained layers {trl['trained_layers']}, trainable parameters {trl['trainable_parameters']}. "
                  f"Same starting weights: {'yes' if trl['start_fingerprint'] == start_fingerprint else 'NO'} "
                  f"({start_fingerprint}).")
            print("Differences that remain: TRL's loss is the mean over a step's pairs, ours the mean over a step's "
                  "prompts of each prompt's mean pair loss; TRL shuffles pairs (a prompt's pairs land in different "
                  "steps), ours length-grouped prompts (a prompt's pairs share a step); TRL's step holds a fixed "
                  "number of pairs, ours a fixed number of prompts; TRL's forward pads right to the micro-batch's "
                  "longest sequence, ours left-pads prompts and right-pads answers; TRL also computes its logging "
                  "metrics (entropy, mean logits, top-1) in every forward.")
        summary = {
            "benchmark": "dpo", "device": str(device), "precision": precision,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "model": base.name,
            "data": data_info, "train_prompts": len(groups), "train_pairs": n_pairs,
            "validation_prompts": len(validation), "validation_pairs": sum(len(g.pairs) for g in validation),
            "config": cfg.as_dict(), "start_fingerprint": start_fingerprint, "notes": notes,
            "load_average": {"before_training": load_before, "after_validation": load_after, "cpus": os.cpu_count()},
            "start_accuracy": {k: v for k, v in accuracy["start"].items() if k != "per_prompt"},
            "variants": {k: {kk: vv for kk, vv in v.items() if kk != "model_dir"} for k, v in results.items()},
            "ratios": ratios,
        }
        emit_summary(summary, args.json)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
