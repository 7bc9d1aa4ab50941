"""Benchmark: supervised fine-tuning (ours) against the plain padded-batch loop a user would
write, in the same run, on the default model and real human demonstrations.

    .venv/bin/python bench/sft.py [--dataset self-instruct|fgrlhf] [--prompts N] [--epochs 1]
        [--max-length 1024] [--seed 0] [--max-steps N] [--val-prompts N] [--device cpu|cuda]
        [--tokens-per-microbatch N] [--plain-accumulation 1] [--json PATH]

Data: ../shared/data/self_instruct_seed_tasks.jsonl (175 tasks with human outputs, the default)
or fgrlhf_qa_dev_feedback.json (the human-corrected answers of 500 questions with passages),
imported with the product's importer into a private SQLite database in a temporary data
directory, snapshotted (split by prompt, 10% validation) and read back: exactly the
demonstrations a user who imported the file and pressed Train would train on. Both sides train
on the same examples (the same token ids: prompt cut from the left to fit max_length, answer
kept whole up to max_response_tokens, the loss on the answer's tokens only).

- ours: run_training(kind="sft") with the default SFTConfig (the CLI overrides only epochs,
  max_length, max_steps, seed, and tokens_per_microbatch when given): each optimizer step takes `batch_size` examples, split into
  length-grouped micro-batches of at most `tokens_per_microbatch` padded tokens; the loss is
  summed over the step's answer tokens and divided by their count.
- plain: the loop a user would write: each epoch a seeded random permutation cut into batches of
  the same `batch_size`, each padded to its longest example (one forward per batch, or
  --plain-accumulation equal slices of it), model(input_ids, attention_mask, labels) with the
  prompt and padding masked (-100), loss.backward(), gradient clipping, AdamW, the same learning
  rate, warm-up and cosine schedule, steps, seed, precision, and checkpoints written at the same
  steps as ours (model and optimizer state).
Timed: the training steps only (loading, data preparation, saving and evaluation are not), after
an untimed warm-up forward/backward so that neither side pays the process's one-time costs.

Reports real (unpadded) tokens/s, padded tokens/s, the padding share, the largest forward pass,
wall and CPU time, the final train loss and the validation loss (mean cross-entropy per answer
token on the snapshot's validation demonstrations, every model scored by the same function:
transformers' forward in fp32, loss summed over answer tokens) of both, and of the base model.
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
DATA_DIR = ROOT.parent / "shared" / "data"
DATASETS = {  # --dataset: (file, import format)
    "self-instruct": (DATA_DIR / "self_instruct_seed_tasks.jsonl", "self-instruct"),
    "fgrlhf": (DATA_DIR / "fgrlhf_qa_dev_feedback.json", "fgrlhf"),
}
IGNORE_INDEX = -100


from bench.common import (TrainSpan, config_from_args, device_and_base, emit_summary, free_memory,  # noqa: E402
                          import_and_snapshot, scratch_dir, setup_django, sync)


def padded_batch(examples, *, pad_id: int, device):
    """Right-padded input ids, attention mask and labels (IGNORE_INDEX on the prompt and the
    padding): what a user's collate function builds."""
    import torch

    width = max(e.length for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        row = torch.tensor(e.input_ids, dtype=torch.long)
        ids[i, :e.length] = row
        mask[i, :e.length] = 1
        labels[i, e.answer_start:e.length] = row[e.answer_start:]
    return ids.to(device), mask.to(device), labels.to(device)


def answer_targets(labels) -> int:
    """Tokens predicted in a batch (a label is predicted from the position before it)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def validation_loss(model, examples, *, pad_id: int, device, token_budget: int) -> dict:
    """Mean cross-entropy per answer token of `examples` under `model` (transformers' forward,
    fp32, length-sorted batches within `token_budget` padded tokens): the same function scores
    every model."""
    import torch
    import torch.nn.functional as F

    from training.ml.data import microbatches

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for micro in microbatches([e.length for e in examples], token_budget):
            ids, mask, labels = padded_batch([examples[i] for i in micro], pad_id=pad_id, device=device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, V)
            total += float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                           ignore_index=IGNORE_INDEX, reduction="sum"))
            count += answer_targets(labels)
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "answer_tokens": count, "examples": len(examples)}


def warm_up(model, examples, *, pad_id: int, device) -> None:
    """One untimed forward and backward on two examples: the process's one-time costs (thread
    pools, kernel set-up, allocator growth) are paid here, not by whichever side runs first."""
    model.to(device).train()
    ids, mask, labels = padded_batch(examples[:2], pad_id=pad_id, device=device)
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    model.zero_grad(set_to_none=True)
    sync(device)


# --- Ours -----------------------------------------------------------------------------------------

def run_ours(*, base: Path, rows: list[dict], config: dict, examples, device, work: Path) -> dict:
    """run_training(kind="sft") on the training rows; only train rows are given, so train()
    evaluates nothing inside the timing (validation is scored afterwards, the same for both)."""
    from training.ml.data import microbatches, step_plan
    from training.ml.run import RunSpec, run_training

    span = TrainSpan(device)
    out_dir, ckpt_dir = work / "ours" / "model", work / "ours" / "checkpoints"
    spec = RunSpec(kind="sft", base_path=str(base), config=config, output_dir=str(out_dir),
                   checkpoint_dir=str(ckpt_dir))
    output = run_training(spec, lambda: iter(rows), hooks=span.hooks(), device=device)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    history = output.result.history
    wall, cpu = span.end[0] - span.start[0], span.end[1] - span.start[1]
    cfg = output.config
    tokens = sum(h.get("tokens", 0) for h in history)
    padded = sum(h.get("padded_tokens", 0) for h in history)
    # The largest forward pass (padded tokens), replayed from the same plan the trainer followed.
    largest, steps, epoch = 0, len(history), 0
    while steps > 0:
        plan = step_plan(len(examples), per_step=cfg.batch_size, seed=cfg.seed, epoch=epoch)
        for items in plan[:steps]:
            chunk = [examples[i] for i in items]
            for group in microbatches([e.length for e in chunk], cfg.tokens_per_microbatch):
                largest = max(largest, len(group) * max(chunk[i].length for i in group))
        steps -= len(plan)
        epoch += 1
    losses = [h["loss"] for h in history if h.get("loss") is not None]
    return {
        "side": "ours", "model_dir": str(out_dir), "steps": len(history), "train_seconds": wall,
        "train_cpu_seconds": cpu, "run_training_train_seconds": output.seconds["train"], "tokens": tokens,
        "padded_tokens": padded, "tokens_per_s": tokens / wall, "padded_tokens_per_s": padded / wall,
        "padding_share": 1 - tokens / max(padded, 1), "largest_forward_tokens": largest,
        "checkpoints": span.checkpoints, "train_loss_last": losses[-1] if losses else None,
        "train_loss_last10": statistics.mean(losses[-10:]) if losses else None,
        "data": output.data["train"], "device": output.device,
    }


# --- The plain loop -------------------------------------------------------------------------------

def run_plain(*, base: Path, examples, cfg, device, precision: str, pad_id: int, accumulation: int,
              work: Path) -> dict:
    """The padded-batch loop (see the module docstring). Returns its figures and the model."""
    import torch
    from transformers import get_scheduler

    from training.ml.models import autocast, load_causal_lm_for_training
    from training.ml.run import seed_everything

    seed_everything(cfg.seed)
    model = load_causal_lm_for_training(base)
    model.config.pad_token_id = pad_id
    # The same trainable weights as ours (train_layers "auto" freezes the lower layers on a CPU).
    from training.ml.models import freeze_lower_layers, resolve_train_layers

    freeze_lower_layers(model, resolve_train_layers(getattr(cfg, "train_layers", None), device=device, lora=False))
    model.to(device).train()
    n = len(examples)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * per_epoch
    total = min(total, cfg.max_steps) if cfg.max_steps else total
    # The same AdamW settings as ours (betas 0.9/0.95, eps 1e-8; weight decay 0 by default).
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate, betas=(0.9, 0.95), eps=1e-8,
                                  weight_decay=cfg.weight_decay)
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.lr_schedule]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=math.ceil(cfg.warmup_ratio * total),
                              num_training_steps=max(total, 1))
    ckpt_dir = work / "plain" / "checkpoints"
    tokens = padded = largest = checkpoints = 0
    losses: list[float] = []
    step = 0
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
        for start in range(0, n, cfg.batch_size):
            if step >= total:
                break
            batch = [examples[i] for i in order[start:start + cfg.batch_size]]
            slices = [batch[i::accumulation] for i in range(accumulation) if batch[i::accumulation]]
            loss_sum, targets = 0.0, 0
            for part in slices:
                ids, mask, labels = padded_batch(part, pad_id=pad_id, device=device)
                with autocast(device, precision):
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                (loss / len(slices)).backward()
                n_targets = answer_targets(labels)
                loss_sum += float(loss.detach()) * n_targets
                targets += n_targets
                tokens += int(mask.sum())
                padded += mask.numel()
                largest = max(largest, mask.numel())
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss_sum / max(targets, 1))
            # Checkpoints where ours writes them (every checkpoint_every steps and at the end of
            # an epoch, never after the last step): the model and the optimizer's state.
            if (step % cfg.checkpoint_every == 0 or start + cfg.batch_size >= n) and step < total:
                path = ckpt_dir / f"checkpoint-{step}"
                path.mkdir(parents=True, exist_ok=True)
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "step": step}, path / "state.pt")
                checkpoints += 1
    sync(device)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return model, {
        "side": "plain", "steps": step, "train_seconds": wall, "train_cpu_seconds": cpu, "tokens": tokens,
        "padded_tokens": padded, "tokens_per_s": tokens / wall, "padded_tokens_per_s": padded / wall,
        "padding_share": 1 - tokens / max(padded, 1), "largest_forward_tokens": largest,
        "checkpoints": checkpoints, "train_loss_last": losses[-1] if losses else None,
        "train_loss_last10": statistics.mean(losses[-10:]) if losses else None,
        "accumulation": accumulation,
    }


# --- Main -----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=list(DATASETS), default="self-instruct")
    parser.add_argument("--data", default="", help="the dataset's file (default: ../shared/data/...)")
    parser.add_argument("--prompts", type=int, default=0, help="train prompts (seeded subsample; default all)")
    parser.add_argument("--val-prompts", type=int, default=0, help="validation prompts (default all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=0, help="prompt + answer tokens (default: SFTConfig's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokens-per-microbatch", type=int, default=0,
                        help="padded tokens per forward pass (ours) "
                             "(default: SFTConfig's; raise it on a GPU)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop both sides after this many steps")
    parser.add_argument("--device", default=os.environ.get("STUDIO_DEVICE", ""), help="cpu, cuda (default: auto)")
    parser.add_argument("--plain-accumulation", type=int, default=1,
                        help="the plain loop splits each batch into this many forward passes (default 1: one)")
    parser.add_argument("--model", default="", help="a HF model directory (default: the converted default model)")
    parser.add_argument("--json", default="", help="also write the final JSON object here")
    args = parser.parse_args()

    scratch = scratch_dir("bench-sft-")
    try:
        setup_django(str(scratch / "data"))
        import torch
        import transformers
        from training.ml.config import SFTConfig
        from training.ml.data import sft_examples
        from training.ml.models import load_causal_lm_for_training, load_tokenizer, resolve_precision

        device, base = device_and_base(args)

        cfg, notes = config_from_args(SFTConfig, args)
        config = cfg.as_dict()  # what both sides are given
        precision = resolve_precision(cfg.precision, device)

        path, format_name = DATASETS[args.dataset]
        path = Path(args.data) if args.data else path
        t0 = time.perf_counter()
        rows, data_info = import_and_snapshot(path, format_name, needs="demonstrations")
        prepare_s = time.perf_counter() - t0
        tokenizer = load_tokenizer(base)
        pad_id = tokenizer.pad_token_id

        def make(split: str, subset: list[dict]):
            return sft_examples(subset, tokenizer, split=split, max_length=cfg.max_length,
                                max_response_tokens=cfg.max_response_tokens)

        with_demos = [r for r in rows if r["split"] == "train" and r.get("demonstrations")]
        if args.prompts and args.prompts < len(with_demos):
            chosen = {r["prompt_id"] for r in random.Random(args.seed).sample(with_demos, args.prompts)}
        else:
            chosen = {r["prompt_id"] for r in with_demos}
        train_rows = [r for r in with_demos if r["prompt_id"] in chosen]
        examples, train_stats = make("train", train_rows)  # exactly what run_training builds from these rows
        validation, _ = make("validation", rows)
        if args.val_prompts:
            keep = {e.prompt_id for e in validation}
            keep = set(random.Random(args.seed + 1).sample(sorted(keep), min(args.val_prompts, len(keep))))
            validation = [e for e in validation if e.prompt_id in keep]

        print(f"model {base.name} on {device} ({precision}); torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads, {platform.processor() or platform.machine()}"
              + (f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
        print(f"data: {data_info['file']} imported ({data_info['import_counts']}) and snapshotted "
              f"({data_info['snapshot_split']}) in {prepare_s:.1f} s")
        lengths = [e.length for e in examples]
        print(f"train: {len(examples)} demonstrations of {len(train_rows)} prompts, {sum(lengths)} tokens (length "
              f"mean {statistics.mean(lengths):.0f}, max {max(lengths)}), {train_stats.truncated_prompts} prompts "
              f"cut to fit max_length {cfg.max_length}, {train_stats.truncated_responses} answers cut to "
              f"{cfg.max_response_tokens}; validation: {len(validation)} demonstrations")
        print(f"config: epochs {cfg.epochs}, batch_size {cfg.batch_size}, lr {cfg.learning_rate} ({cfg.lr_schedule}, "
              f"warm-up {cfg.warmup_ratio}), max_length {cfg.max_length}, tokens_per_microbatch "
              f"{cfg.tokens_per_microbatch}, checkpoint_every {cfg.checkpoint_every}, seed {cfg.seed}"
              + (f", max_steps {cfg.max_steps}" if cfg.max_steps else "") + ("; " + "; ".join(notes) if notes else ""))

        work = scratch / "runs"
        budget = cfg.tokens_per_microbatch
        model = load_causal_lm_for_training(base).to(device)
        model.config.pad_token_id = pad_id
        start_val = validation_loss(model, validation, pad_id=pad_id, device=device, token_budget=budget)
        t0 = time.perf_counter()
        warm_up(model, examples, pad_id=pad_id, device=device)
        print(f"warm-up (untimed): {time.perf_counter() - t0:.1f} s", flush=True)
        del model
        free_memory()

        print("training: ours ...", flush=True)
        ours = run_ours(base=base, rows=train_rows, config=config, examples=examples, device=device, work=work)
        free_memory()
        print("training: plain loop ...", flush=True)
        plain_model, plain = run_plain(base=base, examples=examples, cfg=cfg, device=device, precision=precision,
                                       pad_id=pad_id, accumulation=max(1, args.plain_accumulation), work=work)
        print("validation ...", flush=True)
        plain["validation"] = validation_loss(plain_model, validation, pad_id=pad_id, device=device,
                                              token_budget=budget)
        del plain_model
        free_memory()
        ours_model = transformers.AutoModelForCausalLM.from_pretrained(ours["model_dir"], local_files_only=True,
                                                                       dtype=torch.float32).to(device)
        ours["validation"] = validation_loss(ours_model, validation, pad_id=pad_id, device=device,
                                             token_budget=budget)
        del ours_model
        free_memory()

        print()
        print("| side | steps | wall s | CPU s | real tokens/s | padded tokens/s | padding | largest forward "
              "| train loss (last step) | validation loss / answer token |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        print(f"| base model (before training) | 0 | - | - | - | - | - | - | - | {start_val['loss']:.4f} |")
        slices = f" ({plain['accumulation']} forwards per batch)" if plain["accumulation"] > 1 else ""
        for label, r in (("ours (length-grouped micro-batches)", ours), (f"plain padded batches{slices}", plain)):
            print(f"| {label} | {r['steps']} | {r['train_seconds']:.1f} | {r['train_cpu_seconds']:.1f} | "
                  f"{r['tokens_per_s']:.1f} | {r['padded_tokens_per_s']:.1f} | {100 * r['padding_share']:.1f}% | "
                  f"{r['largest_forward_tokens']} | {r['train_loss_last']:.4f} | {r['validation']['loss']:.4f} |")
        print()
        ratios = {
            "ours_vs_plain_tokens_per_s": ours["tokens_per_s"] / plain["tokens_per_s"],
            "ours_vs_plain_wall": plain["train_seconds"] / ours["train_seconds"],
            "ours_vs_plain_cpu": plain["train_cpu_seconds"] / ours["train_cpu_seconds"],
            "validation_loss_ours_minus_plain": ours["validation"]["loss"] - plain["validation"]["loss"],
        }
        print(f"Real tokens = the examples' own tokens (prompt + answer), padded = what the forward passes held; "
              f"tokens/s over the training steps' wall time. Validation: {start_val['examples']} demonstrations, "
              f"{start_val['answer_tokens']} answer tokens, every model scored by the same function (fp32). "
              f"Train loss = mean per answer token of the last step.")
        print(f"ours / plain: {ratios['ours_vs_plain_tokens_per_s']:.2f}x real tokens/s "
              f"({ratios['ours_vs_plain_wall']:.2f}x less wall time, {ratios['ours_vs_plain_cpu']:.2f}x less CPU "
              f"time); validation loss {ours['validation']['loss']:.4f} vs {plain['validation']['loss']:.4f} "
              f"({ratios['validation_loss_ours_minus_plain']:+.4f}). Checkpoints written: ours {ours['checkpoints']}, "
              f"plain {plain['checkpoints']}.")
        print("Differences that remain: the plain loop shuffles with torch.randperm, ours with its seeded plan "
              "(different batches, same size); with --plain-accumulation > 1 its loss is the mean of the slices' "
              "means, ours is always the step's sum over answer tokens / their count.")
        summary = {
            "benchmark": "sft", "device": str(device), "precision": precision, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "model": base.name, "dataset": args.dataset, "data": data_info,
            "train_examples": len(examples), "train_tokens": sum(lengths), "validation_examples": len(validation),
            "config": cfg.as_dict(), "notes": notes, "base_validation": start_val,
            "sides": {"ours": {k: v for k, v in ours.items() if k != "model_dir"}, "plain": plain},
            "ratios": ratios,
        }
        emit_summary(summary, args.json)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
