"""Benchmark: reward-model training (ours) against TRL's RewardTrainer, in the same run, on the
default model and the real FineGrainedRLHF K=4 feedback.

    .venv/bin/python bench/reward_training.py [--prompts N] [--epochs 1] [--max-length 512] [--seed 0]
        [--max-steps N] [--val-prompts N] [--device cpu|cuda] [--tokens-per-microbatch N]
        [--checkpoint-every N] [--skip-trl] [--skip-per-candidate] [--json PATH]

TRL is a benchmark-only dependency: `pip install -r requirements-bench.txt`.

Data: ../shared/data/fgrlhf_qa_dev_feedback.json (500 questions with passages, 4 answers, 6
pairwise human preferences) is imported with the product's importer into a private SQLite
database in a temporary data directory (nothing of the user's is touched), snapshotted (split by
prompt, 10% validation) and read back: the training rows are exactly what a user who imported
the file and pressed Train would train on. --prompts subsamples the training prompts (seeded);
the validation split is always the snapshot's (--val-prompts subsamples it for smoke tests).

Variants, one after the other in this process, on the same model, data, token ids and seed:
- ours: run_training(kind="reward") with the default RewardConfig (the CLI overrides only
  epochs, max_length, max_steps, seed, and tokens_per_microbatch / checkpoint_every when given):
  each prompt is encoded once and its K answers run on its KV cache; the ranking loss over every
  untied pair, averaged per prompt.
- ours, per candidate: the same trainer with share_prompt_prefix=False: one forward per answer,
  the prompt repeated (isolates what sharing the prompt gains).
- TRL: trl.RewardTrainer on the same pairs (every untied pair of each training prompt's
  consensus ranking as chosen/rejected), given as pre-tokenized `chosen_ids`/`rejected_ids` =
  our prompt tokens + our answer tokens, so truncation is ours (prompt cut from the left, the
  answers whole) and TRL's max_length filter drops nothing (counted and reported). It scores
  two forwards per pair. Same base weights and reward-head initialisation (our loader, same
  seed), learning rate, warm-up ratio, cosine schedule, epochs, AdamW betas/eps/weight decay,
  gradient clipping, precision, checkpoint cadence and padded-token budget per forward; its
  pairs per optimizer step are our prompts_per_step times the mean pairs per prompt.
Timed: train() only (data preparation, model loading, saving and evaluation are not), after an
untimed warm-up forward/backward so that no variant pays the process's one-time costs.

Validation accuracy of every model (and of the untrained starting point) on the same
validation pairs, each model scored with transformers' own forward (model(input_ids,
attention_mask).logits, padded by its own saved tokenizer, fp32), so that no model is favoured
by our scorer; our scorer (reward_evaluate, the one the product reports) is shown beside it.
95% intervals: bootstrap over prompts (training.ml.evaluation.accuracy_with_interval).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA_FILE = ROOT.parent / "shared" / "data" / "fgrlhf_qa_dev_feedback.json"
IMPORT_FORMAT = "fgrlhf"


from bench.common import (TrainSpan, config_from_args, device_and_base, emit_summary, free_memory,  # noqa: E402
                          import_and_snapshot, preference_items_taken, require_trl, scratch_dir, setup_django,
                          sync)


def fingerprint(model) -> str:
    """A short digest of the reward head and one backbone weight: equal starting points print
    the same."""
    import hashlib

    from training.ml.models import reward_head

    head = reward_head(model).weight.detach().float().cpu().numpy().tobytes()
    first = next(p for n, p in model.named_parameters() if "embed" in n).detach().float().cpu().numpy()
    return hashlib.sha256(head + first[:64].tobytes()).hexdigest()[:12]


def pair_sequences(groups) -> list[tuple[list[int], list[int]]]:
    """(chosen ids, rejected ids) of every pair: the group's prompt tokens + each answer's."""
    return [(list(g.prompt_ids + g.responses[i]), list(g.prompt_ids + g.responses[j]))
            for g in groups for i, j, _margin in g.pairs]


def warm_up(model, groups, *, pad_id: int, device) -> None:
    """One untimed forward and backward through each scoring path (shared prefix, one sequence
    per answer, transformers' forward) on two prompts: the process's one-time costs (thread
    pools, kernel set-up, allocator growth) are paid here, not by whichever variant runs first."""
    import torch

    from training.ml.models import score_groups

    model.to(device).train()
    sample = groups[:2]
    prompts, responses = [g.prompt_ids for g in sample], [g.responses for g in sample]
    for shared in (True, False):
        score_groups(model, prompts, responses, pad_id=pad_id, shared_prefix=shared).sum().backward()
    ids = torch.tensor([list(sample[0].prompt_ids + r) for r in sample[0].responses[:1]], device=device)
    model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits.sum().backward()
    model.zero_grad(set_to_none=True)
    sync(device)


def fmt_acc(acc: dict | None) -> str:
    if not acc or acc.get("accuracy") is None:
        return "-"
    low, high = acc["accuracy_ci"]
    return f"{acc['accuracy']:.3f} [{low:.3f}, {high:.3f}]"


# --- Validation: transformers' own forward, and our scorer ----------------------------------------

def hf_accuracy(model_dir: Path, groups, *, device, token_budget: int, seed: int) -> dict:
    """Pairwise accuracy of the saved reward model in `model_dir` on `groups`, each answer
    scored once as prompt + answer through AutoModelForSequenceClassification's forward
    (logits at the last non-pad token), padded by the model's own saved tokenizer, in fp32.
    A tie in score counts half, as in reward_evaluate."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from training.ml.data import microbatches
    from training.ml.evaluation import accuracy_with_interval

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True,
                                                               dtype=torch.float32).to(device).eval()
    sequences = [list(g.prompt_ids + r) for g in groups for r in g.responses]
    scores = [0.0] * len(sequences)
    with torch.no_grad():
        for micro in microbatches([len(s) for s in sequences], token_budget):
            batch = tokenizer.pad({"input_ids": [sequences[i] for i in micro]}, padding=True, return_tensors="pt")
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits  # (B, 1)
            for i, value in zip(micro, logits[:, 0].float().tolist()):
                scores[i] = value
    per_prompt, offset = [], 0
    for g in groups:
        s = scores[offset:offset + len(g.responses)]
        offset += len(g.responses)
        correct = sum(1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0 for i, j, _ in g.pairs)
        per_prompt.append((correct, len(g.pairs)))
    del model
    free_memory()
    return {**accuracy_with_interval(per_prompt, seed=seed), "per_prompt": per_prompt}


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


def ours_accuracy(model_dir: Path, groups, *, device, precision: str, token_budget: int, seed: int) -> dict:
    """The same model's accuracy by our scorer (reward_evaluate, shared prompt prefix): what the
    product reports on a run's page."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from training.ml.reward import reward_evaluate

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True,
                                                               dtype=torch.float32).to(device)
    result = reward_evaluate(model, groups, pad_id=model.config.pad_token_id, device=device, precision=precision,
                             tokens_per_microbatch=token_budget, shared_prefix=True, seed=seed)
    del model
    free_memory()
    return {k: v for k, v in result.items() if k != "by_source"}


# --- The variants ---------------------------------------------------------------------------------

def run_ours(name: str, *, base: Path, rows: list[dict], config: dict, groups, device, work: Path) -> dict:
    """run_training(kind="reward") on the training rows; only train rows are given, so train()
    evaluates nothing inside the timing (validation is scored afterwards, the same for all)."""
    from training.ml.run import RunSpec, run_training

    span = TrainSpan(device)
    out_dir, ckpt_dir = work / name / "model", work / name / "checkpoints"
    spec = RunSpec(kind="reward", base_path=str(base), config=config, output_dir=str(out_dir),
                   checkpoint_dir=str(ckpt_dir))
    output = run_training(spec, lambda: iter(rows), hooks=span.hooks(), device=device)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    history = output.result.history
    wall, cpu = span.end[0] - span.start[0], span.end[1] - span.start[1]
    cfg = output.config
    shared = cfg.share_prompt_prefix
    taken = preference_items_taken(groups, cfg, steps=len(history))
    real_tokens = sum(len(groups[i].prompt_ids) + sum(len(r) for r in groups[i].responses) if shared
                      else groups[i].tokens for i in taken)
    pairs = sum(len(groups[i].pairs) for i in taken)
    losses = [h["loss"] for h in history if h.get("loss") is not None]
    return {
        "variant": name, "model_dir": str(out_dir), "steps": len(history), "prompts": len(taken), "pairs": pairs,
        "train_seconds": wall, "train_cpu_seconds": cpu, "run_training_train_seconds": output.seconds["train"],
        "prompts_per_s": len(taken) / wall, "pairs_per_s": pairs / wall,
        "tokens_encoded": real_tokens, "tokens_encoded_per_s": real_tokens / wall,
        "pairs_per_step": pairs / max(len(history), 1), "checkpoints": span.checkpoints,
        "train_loss_last": statistics.mean(losses[-10:]) if losses else None,
        "train_loss_what": "ranking loss averaged per prompt, mean of the last <=10 steps",
        "data": output.data["train"], "device": output.device,
        "share_prompt_prefix": shared,
    }


def trl_batch_shape(target_pairs: float, cap: int) -> tuple[int, int]:
    """(pairs per micro-batch, accumulation steps) closest to `target_pairs` per optimizer step
    with at most `cap` pairs per micro-batch."""
    accumulation = max(1, math.ceil(target_pairs / cap))
    return max(1, min(cap, round(target_pairs / accumulation))), accumulation


def run_trl(*, base: Path, groups, reward_config, device, precision: str, work: Path) -> dict:
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    from training.ml.models import load_reward_model_for_training, load_tokenizer, reward_pad_token

    cfg = reward_config
    pairs = pair_sequences(groups)
    too_long = sum(1 for c, r in pairs if len(c) > cfg.max_length or len(r) > cfg.max_length)
    longest = max(max(len(c), len(r)) for c, r in pairs)
    target = cfg.prompts_per_step * len(pairs) / len(groups)
    per_device, accumulation = trl_batch_shape(target, max(1, cfg.tokens_per_microbatch // (2 * longest)))
    dataset = Dataset.from_dict({"chosen_ids": [c for c, _ in pairs], "rejected_ids": [r for _, r in pairs]})
    # TRL's max_steps replaces its epochs; like ours it may only cut a run short.
    epoch_steps = math.ceil(math.ceil(len(pairs) / per_device) / accumulation)
    max_steps = cfg.max_steps if cfg.max_steps and cfg.max_steps < cfg.epochs * epoch_steps else -1

    tokenizer = load_tokenizer(base)
    reward_pad_token(tokenizer)  # the pad token ours uses: transformers' pooling then reads the same token
    model = load_reward_model_for_training(base, tokenizer=tokenizer, seed=cfg.seed)
    start_fingerprint = fingerprint(model)
    # The same trainable weights as ours (train_layers "auto" freezes the lower layers on a CPU).
    from training.ml.models import freeze_lower_layers, resolve_train_layers

    freeze_lower_layers(model, resolve_train_layers(getattr(cfg, "train_layers", None), device=device, lora=False))
    saving = {"save_strategy": "steps", "save_steps": cfg.checkpoint_every, "save_total_limit": cfg.keep_checkpoints}
    # TRL's default is activation (gradient) checkpointing on; ours keeps activations, so it is off.
    fields = TRLRewardConfig.__dataclass_fields__
    recompute_field = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    no_recompute = {recompute_field: False}
    args = TRLRewardConfig(
        output_dir=str(work / "trl" / "checkpoints"), seed=cfg.seed, num_train_epochs=cfg.epochs,
        max_steps=max_steps, learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_schedule,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, adam_beta1=0.9, adam_beta2=0.95,
        adam_epsilon=1e-8, max_grad_norm=cfg.max_grad_norm, per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation, max_length=cfg.max_length, bf16=precision == "bf16", fp16=False,
        use_cpu=device.type == "cpu", logging_steps=1, disable_tqdm=True,
        report_to="none", dataloader_num_workers=0, eval_strategy="no", **saving, **no_recompute,
    )
    if cfg.lr_schedule == "constant":
        args.lr_scheduler_type = "constant_with_warmup"

    class Checkpoints(TrainerCallback):
        """Checkpoints where ours writes them: every `checkpoint_every` steps and at the end of
        every epoch but never after the last step (ours leaves the finished model to the caller,
        outside the timing; Trainer would save a checkpoint there). Counts them."""

        saves = 0

        def on_epoch_end(self, args, state, control, **kwargs):
            if state.global_step < state.max_steps:
                control.should_save = True

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False

        def on_save(self, *args, **kwargs):
            Checkpoints.saves += 1

    seen = {"pairs": 0, "tokens": 0, "padded_tokens": 0}

    class CountingRewardTrainer(RewardTrainer):
        """Counts what each training micro-batch holds (pairs, real and padded tokens)."""

        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training:
                mask = inputs["attention_mask"]
                seen["pairs"] += mask.shape[0] // 2
                seen["tokens"] += int(mask.sum())
                seen["padded_tokens"] += mask.numel()
            return super().compute_loss(model, inputs, *args, **kwargs)

    trainer = CountingRewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                    callbacks=[Checkpoints()])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    dropped = len(pairs) - len(trainer.train_dataset)
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    sync(device)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    out_dir = work / "trl" / "model"
    trainer.save_model(str(out_dir))
    shutil.rmtree(work / "trl" / "checkpoints", ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    steps = trainer.state.global_step
    prompt_equivalents = seen["pairs"] * len(groups) / len(pairs)
    result = {
        "variant": "trl", "model_dir": str(out_dir), "steps": steps, "pairs": seen["pairs"],
        "prompts": prompt_equivalents, "prompts_what": "pairs trained x train prompts / train pairs",
        "train_seconds": wall, "train_cpu_seconds": cpu, "prompts_per_s": prompt_equivalents / wall,
        "pairs_per_s": seen["pairs"] / wall, "tokens_encoded": seen["tokens"],
        "tokens_encoded_per_s": seen["tokens"] / wall,
        "padding_share": 1 - seen["tokens"] / max(seen["padded_tokens"], 1),
        "pairs_per_step": seen["pairs"] / max(steps, 1), "checkpoints": Checkpoints.saves,
        "train_loss_last": statistics.mean(losses[-10:]) if losses else None,
        "train_loss_what": "pairwise loss averaged per pair, mean of the last <=10 logged steps",
        "pairs_per_microbatch": per_device, "gradient_accumulation": accumulation,
        "target_pairs_per_step": target, "train_pairs": len(pairs), "pairs_too_long": too_long,
        "pairs_dropped_by_trl": dropped, "start_fingerprint": start_fingerprint,
        "optimizer": getattr(args.optim, "value", str(args.optim)), "bf16": bool(args.bf16),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "gradient_checkpointing": bool(getattr(args, "activation_checkpointing", args.gradient_checkpointing)),
    }
    del trainer, model
    free_memory()
    return result


# --- Main -----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=0, help="train prompts (seeded subsample; default all)")
    parser.add_argument("--val-prompts", type=int, default=0, help="validation prompts (default all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=0, help="prompt + answer tokens (default: RewardConfig's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokens-per-microbatch", type=int, default=0,
                        help="padded tokens per forward pass for every variant "
                             "(default: RewardConfig's; raise it on a GPU)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop every variant after this many steps")
    parser.add_argument("--device", default=os.environ.get("STUDIO_DEVICE", ""), help="cpu, cuda (default: auto)")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="checkpoint cadence for every variant (default: RewardConfig's)")
    parser.add_argument("--data", default=str(DATA_FILE), help="the fgrlhf JSON file")
    parser.add_argument("--model", default="", help="a HF model directory (default: the converted default model)")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--skip-per-candidate", action="store_true")
    parser.add_argument("--json", default="", help="also write the final JSON object here")
    args = parser.parse_args()

    require_trl(args)

    scratch = scratch_dir("bench-reward-")
    try:
        setup_django(str(scratch / "data"))
        import torch
        from training.ml.config import RewardConfig
        from training.ml.data import reward_groups
        from training.ml.models import (
            load_reward_model_for_training,
            load_tokenizer,
            resolve_precision,
            reward_pad_token,
            save_trained,
        )

        device, base = device_and_base(args)

        cfg, notes = config_from_args(RewardConfig, args)
        config = cfg.as_dict()  # what both sides are given
        precision = resolve_precision(cfg.precision, device)

        t0 = time.perf_counter()
        rows, data_info = import_and_snapshot(Path(args.data), IMPORT_FORMAT)
        prepare_s = time.perf_counter() - t0
        tokenizer = load_tokenizer(base)
        reward_pad_token(tokenizer)

        def make(split: str, subset: list[dict]):
            return reward_groups(subset, tokenizer, split=split, max_length=cfg.max_length,
                                 max_response_tokens=cfg.max_response_tokens, labels=cfg.labels,
                                 use_rating_margin=cfg.use_rating_margin, margin_scale=cfg.margin_scale)

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

        print(f"model {base.name} on {device} ({precision}); torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads, {platform.processor() or platform.machine()}"
              + (f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
        print(f"data: {data_info['file']} imported ({data_info['import_counts']}) and snapshotted "
              f"({data_info['snapshot_split']}) in {prepare_s:.1f} s")
        print(f"train: {len(groups)} prompts, {n_pairs} pairs ({n_pairs / len(groups):.2f} per prompt), "
              f"{train_stats.truncated_prompts} prompts cut from the left to fit max_length {cfg.max_length}, "
              f"{train_stats.truncated_responses} answers cut to {cfg.max_response_tokens}; validation: "
              f"{len(validation)} prompts, {sum(len(g.pairs) for g in validation)} pairs")
        print(f"config: epochs {cfg.epochs}, prompts_per_step {cfg.prompts_per_step}, lr {cfg.learning_rate} "
              f"({cfg.lr_schedule}, warm-up {cfg.warmup_ratio}), max_length {cfg.max_length}, "
              f"tokens_per_microbatch {cfg.tokens_per_microbatch}, checkpoint_every {cfg.checkpoint_every}, "
              f"seed {cfg.seed}" + (f", max_steps {cfg.max_steps}" if cfg.max_steps else "")
              + ("; " + "; ".join(notes) if notes else ""))

        work = scratch / "runs"
        # The untrained starting point of every variant (our loader, same seed -> same head).
        start = load_reward_model_for_training(base, tokenizer=tokenizer, seed=cfg.seed)
        start_fingerprint = fingerprint(start)
        save_trained(start, tokenizer, work / "start" / "model")
        t0 = time.perf_counter()
        warm_up(start, groups, pad_id=tokenizer.pad_token_id, device=device)
        print(f"warm-up (untimed): {time.perf_counter() - t0:.1f} s", flush=True)
        del start
        free_memory()

        results: dict[str, dict] = {}
        ours_config = dict(config)
        print("training: ours ...", flush=True)
        results["ours"] = run_ours("ours", base=base, rows=train_rows, config=ours_config, groups=groups,
                                   device=device, work=work)
        free_memory()
        if not args.skip_per_candidate:
            print("training: ours, per candidate ...", flush=True)
            results["per_candidate"] = run_ours("per_candidate", base=base, rows=train_rows,
                                                config={**ours_config, "share_prompt_prefix": False}, groups=groups,
                                                device=device, work=work)
            free_memory()
        if not args.skip_trl:
            print("training: TRL RewardTrainer ...", flush=True)
            results["trl"] = run_trl(base=base, groups=groups, reward_config=cfg, device=device, precision=precision,
                                     work=work)
            if results["trl"]["start_fingerprint"] != start_fingerprint:
                print("WARNING: TRL's starting weights differ from ours")

        print("validation ...", flush=True)
        budget = cfg.tokens_per_microbatch
        accuracy = {"start": {"hf_forward": hf_accuracy(work / "start" / "model", validation, device=device,
                                                        token_budget=budget, seed=cfg.seed)}}
        for name, r in results.items():
            accuracy[name] = {
                "hf_forward": hf_accuracy(Path(r["model_dir"]), validation, device=device, token_budget=budget,
                                          seed=cfg.seed),
                "our_scorer": ours_accuracy(Path(r["model_dir"]), validation, device=device, precision=precision,
                                            token_budget=budget, seed=cfg.seed),
            }
            r["validation"] = accuracy[name]

        labels = {"ours": "ours (shared prompt prefix)", "per_candidate": "ours, per candidate (prompt repeated)",
                  "trl": "TRL RewardTrainer (2 forwards per pair)"}
        print()
        print("| variant | steps | prompts | pairs | train wall s | CPU s | prompts/s | pairs/s | tokens encoded/s "
              "| val accuracy, HF forward [95% CI] | val accuracy, our scorer |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
        print(f"| untrained start (same for all) | 0 | - | - | - | - | - | - | - | "
              f"{fmt_acc(accuracy['start']['hf_forward'])} | - |")
        for name, r in results.items():
            print(f"| {labels[name]} | {r['steps']} | {r['prompts']:.0f} | {r['pairs']} | {r['train_seconds']:.1f} | "
                  f"{r['train_cpu_seconds']:.1f} | {r['prompts_per_s']:.3f} | {r['pairs_per_s']:.2f} | "
                  f"{r['tokens_encoded_per_s']:.0f} | {fmt_acc(accuracy[name]['hf_forward'])} | "
                  f"{fmt_acc(accuracy[name]['our_scorer'])} |")
        print()
        val = accuracy["start"]["hf_forward"]
        print(f"Validation: {val['pairs']} pairs of {val['prompts']} prompts (untied pairs of each prompt's "
              f"consensus ranking), 95% CI by {val['ci_method']}. Train wall time = train() only; prompts/s = "
              f"train prompts x epochs / train wall s; tokens encoded = real (unpadded) tokens the model ran "
              f"forward: ours P + K*R per prompt, per candidate K*(P+R), TRL 2*(P+R) per pair.")
        ratios = {}
        ours = results["ours"]
        if "per_candidate" in results:
            ratios["ours_vs_per_candidate_prompts_per_s"] = ours["prompts_per_s"] / results["per_candidate"][
                "prompts_per_s"]
            print(f"ours / per candidate: {ratios['ours_vs_per_candidate_prompts_per_s']:.2f}x prompts/s "
                  f"(the gain of encoding each prompt once)")
        if "trl" in results:
            trl = results["trl"]
            ratios["ours_vs_trl_prompts_per_s"] = ours["prompts_per_s"] / trl["prompts_per_s"]
            ratios["ours_vs_trl_pairs_per_s"] = ours["pairs_per_s"] / trl["pairs_per_s"]
            ratios["ours_vs_trl_train_cpu_s_per_prompt"] = (trl["train_cpu_seconds"] / trl["prompts"]) / (
                ours["train_cpu_seconds"] / ours["prompts"])
            acc_ours, acc_trl = accuracy["ours"]["hf_forward"]["accuracy"], accuracy["trl"]["hf_forward"]["accuracy"]
            paired = paired_difference(accuracy["ours"]["hf_forward"]["per_prompt"],
                                       accuracy["trl"]["hf_forward"]["per_prompt"], seed=cfg.seed)
            ratios["accuracy_ours_minus_trl"] = paired
            goal = ratios["ours_vs_trl_prompts_per_s"] >= 3 and acc_ours >= acc_trl
            print(f"ours / TRL: {ratios['ours_vs_trl_prompts_per_s']:.2f}x prompts/s, "
                  f"{ratios['ours_vs_trl_pairs_per_s']:.2f}x pairs/s, "
                  f"{ratios['ours_vs_trl_train_cpu_s_per_prompt']:.2f}x per CPU second; validation accuracy "
                  f"{acc_ours:.3f} vs {acc_trl:.3f} (difference {paired['difference']:+.3f}, paired 95% CI "
                  f"[{paired['ci'][0]:+.3f}, {paired['ci'][1]:+.3f}]). "
                  f"Goal (>= 3x TRL's throughput, accuracy >= TRL's): {'met' if goal else 'NOT met'}.")
            print(f"TRL setup: {trl['pairs_per_microbatch']} pairs per micro-batch x {trl['gradient_accumulation']} "
                  f"accumulation = {trl['pairs_per_microbatch'] * trl['gradient_accumulation']} pairs per optimizer "
                  f"step (ours: {cfg.prompts_per_step} prompts = {trl['target_pairs_per_step']:.1f} pairs on "
                  f"average; measured {trl['pairs_per_step']:.1f} vs {ours['pairs_per_step']:.1f}); pairs longer "
                  f"than max_length {trl['pairs_too_long']}, dropped by TRL's filter {trl['pairs_dropped_by_trl']}; "
                  f"padding {100 * trl['padding_share']:.1f}% of its forward tokens; optimizer {trl['optimizer']}, "
                  f"gradient checkpointing {'on' if trl['gradient_checkpointing'] else 'off'} (TRL's default is on), "
                  f"bf16 {trl['bf16']}; checkpoints written "
                  f"{trl['checkpoints']} (ours {ours['checkpoints']}). Same starting weights: "
                  f"{'yes' if trl['start_fingerprint'] == start_fingerprint else 'NO'} ({start_fingerprint}).")
            print("Differences that remain: TRL's loss is the mean over a step's pairs, ours the mean over a "
                  "step's prompts of each prompt's mean pair loss (InstructGPT); TRL shuffles pairs, ours "
                  "prompts (a prompt's pairs share a step); TRL's step holds a fixed number of pairs.")
        summary = {
            "benchmark": "reward_training", "device": str(device), "precision": precision,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "model": base.name,
            "data": data_info, "train_prompts": len(groups), "train_pairs": n_pairs,
            "validation_prompts": len(validation), "validation_pairs": sum(len(g.pairs) for g in validation),
            "config": cfg.as_dict(), "start_fingerprint": start_fingerprint, "notes": notes,
            "start_accuracy": accuracy["start"],
            "variants": {k: {kk: vv for kk, vv in v.items() if kk != "model_dir"} for k, v in results.items()},
            "ratios": ratios,
        }
        emit_summary(summary, args.json)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
