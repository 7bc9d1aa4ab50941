"""Benchmark: PPO training (ours) against TRL's RLOOTrainer, in the same run, on the default model,
the real FineGrainedRLHF prompts and one reward model: throughput (episodes/s, generated
tokens/s) and the share of step time spent generating.

    .venv/bin/python bench/ppo.py [--prompts N] [--max-steps 8] [--max-new-tokens N]
        [--rollout-prompts N] [--minibatch-prompts N] [--max-prompt-tokens N] [--trl-generations 2] [--seed 0]
        [--device cpu|cuda] [--reward-model PATH] [--reward-steps 10] [--checkpoint-every N]
        [--skip-trl] [--json PATH]

TRL is a benchmark-only dependency: `pip install -r requirements-bench.txt`.

Why RLOO: TRL 1.16 no longer ships PPO; of the online trainers it keeps (RLOO, GRPO), RLOO is the
closer to PPO as the product runs it: the KL to the starting model is a penalty on the reward
(as in PPO/InstructGPT; GRPO puts it in the loss), the advantage is the reward minus a baseline
(GRPO also divides by each group's reward std), the loss is PPO's clipped ratio, and its
num_iterations passes over each generation batch are our ppo_epochs. Both trainers share TRL's
generation and scoring code, so the throughput figures would hardly differ with GRPO.

Data: ../shared/data/fgrlhf_qa_dev_feedback.json is imported with the product's importer into a
private SQLite database in a temporary data directory (nothing of the user's is touched),
snapshotted and read back. The training prompts are the snapshot's train split
(training.ml.winrate.policy_prompts, cut from the left to max_prompt_tokens, as run_training's
PPO builds them); --prompts subsamples them (seeded). Only those train rows are given to
run_training, so our run has no validation prompts to evaluate and the end-of-run win rate is
off (win_rate_prompts 0): nothing but training steps runs in train().

The reward model: --reward-model PATH (a sequence-classification directory the product saved),
else a quick one trained here first (run_training(kind="reward") for --reward-steps steps on the
same train rows, its offset from 64 best answers; untimed): a judge for throughput, not a good
one. Both sides score with ONE function, training.ml.winrate.reward_scores (prompt + answer
text, the reward model's own tokenizer, prompt cut from the left to reward_max_length, the
answer capped at max_new_tokens + 1): ours through run_training's own reward_fn, TRL through a
Python reward function (`reward_funcs`) calling it on the same PolicyPrompt (found by the
dataset's prompt_id column) and the completion text stripped as our sampler strips it.

The two sides, one after the other in this process, on the same base weights (our loader), the
same lower layers frozen (resolve_train_layers / freeze_lower_layers: "auto" is the top 12 of 30
on a CPU; the tied output head stays frozen on both), seed, fp32, temperature 1.0 (top-p 1, no
top-k), max new tokens, learning rate, warm-up ratio, schedule, AdamW betas/eps/weight decay
(fused), gradient clipping, clip range, KL coefficient, reward clipping and checkpoint cadence:
- ours: run_training(kind="ppo") with the default PPOConfig (the CLI overrides only seed,
  max_steps, max_new_tokens, rollout_prompts, minibatch_prompts, max_prompt_tokens,
  checkpoint_every; and win_rate_prompts 0). A rollout samples one answer for each of rollout_prompts prompts
  (training.ml.sampling: batched KV-cache decoding, finished rows leave the batch), runs the
  policy (log-probabilities, values, entropy) and the reference over them, scores them,
  builds per-token rewards and GAE advantages; ppo_epochs passes in mini-batches of
  minibatch_prompts answers (one optimizer step each; micro-batches of 4 x reward_max_length
  padded tokens) train the clipped policy loss and the value head's clipped loss.
- TRL: trl.RLOOTrainer with num_generations k = --trl-generations (2, RLOO's minimum), so a
  generation batch of rollout_prompts answers holds rollout_prompts / k prompts, k answers
  each: the same answers per rollout and per optimizer step as ours (generation_batch_size =
  rollout_prompts; per_device_train_batch_size x gradient_accumulation_steps =
  minibatch_prompts, the micro-batch the largest divisor of it whose longest prompt +
  max_new_tokens fits our 4 x reward_max_length padded tokens), num_iterations = ppo_epochs,
  so it generates as often as we roll out and takes the same number of optimizer steps
  (max_steps = ours). Prompts: the dataset's "prompt" is our prompt tokens decoded to text
  (the chat template already applied: pre-rendered text, not conversational), and
  `_tokenize_prompts` is overridden to hand TRL our exact token ids (how many TRL's own
  tokenization would have reproduced is reported). Generation is TRL's default path
  (transformers' model.generate on the CPU, no vLLM, no continuous batching), stopping on the
  same end-of-turn token. beta = our kl_coef (0.05), epsilon = our clip_range, reward clipped
  to +-our reward_clip, normalize_advantages on (we whiten each rollout's advantages), activation
  (gradient) checkpointing off (TRL's default is on; ours keeps activations), bf16 off (TRL's
  default is on; ours is fp32 on a CPU), its reference a second full model (ours: a frozen copy
  of the policy, the same memory and the same forward per rollout).
Differences that remain (each side's own algorithm; none is tuned away):
  RLOO samples k answers per prompt (rollout_prompts / k distinct prompts per rollout; ours
  rollout_prompts distinct prompts); it has no value head (ours: a linear head on the policy's
  hidden states, trained with a value loss in the same forward) and a sequence-level loss on
  the summed log-ratio (ours per token with GAE); its KL penalty is fixed (ours adaptive,
  starting at the same 0.05); it shuffles a generation batch once and reuses the same
  mini-batches in each iteration (ours reshuffles per PPO epoch); its epochs are over prompts
  seen k times; model.generate keeps finished rows in the batch as padding (ours drops them);
  TRL computes entropy in every training forward (ours only in the rollout, entropy_coef 0)
  and its log-probabilities through a fused LM head patched onto the model.
Timed: each side's training steps, from the first step's start to the last step's end (our
TrainSpan hooks; a TrainerCallback for TRL; Trainer.train() as a whole is reported too), after
an untimed warm-up (both samplers, a forward/backward) so that neither side pays the process's
one-time costs. Inside the steps: generation (ours: training.ml.winrate.sample_answers as
PPOTask calls it, wrapped for the run like bench/dpo.py wraps run._dpo_references; TRL: its
RLOOTrainer._generate, prompt ids to decoded completions) and reward scoring (reward_scores,
wrapped the same way on both sides). Not timed: data preparation, the reward model, model
loading, trainer construction, saving.
episodes/s = answers sampled and trained on / steps seconds; tokens/s = generated tokens (each
answer's tokens up to and including its end-of-turn token) / steps seconds; generation share =
generation seconds / steps seconds. Mean reward (the raw reward-model score) of the first and
the last rollout of each side, for orientation: no accuracy claim.
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
REWARD_NORMALIZE_ANSWERS = 64  # the quick reward model's offset: from this many best answers


from bench.common import (TrainSpan, device_and_base, emit_summary, free_memory, import_and_snapshot,  # noqa: E402
                          require_trl, scratch_dir, setup_django, sync)


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


def clean_text(text: str) -> str:
    """A completion's text as our sampler hands it to the reward function (sampling._clean)."""
    return text.replace("\x00", "").strip()


class RewardRecorder:
    """reward_scores, timed, with each call's mean score kept (one call = one rollout)."""

    def __init__(self, device):
        import training.ml.winrate as winrate

        self.original = winrate.reward_scores
        self.clock = Clock(device)
        self.means: list[float] = []

    def __call__(self, *args, **kwargs):
        with self.clock:
            scores = self.original(*args, **kwargs)
        self.means.append(statistics.mean(float(s) for s in scores) if scores else float("nan"))
        return scores


def warm_up(model, tokenizer, prompts, *, pad_id: int, device) -> None:
    """Untimed: both samplers (ours and transformers' generate) for a few tokens, and one
    forward/backward through our answer path and transformers' forward, so that the process's
    one-time costs (thread pools, kernel set-up, allocator growth) are paid here, not by
    whichever side runs first."""
    import torch

    from training.ml.models import answer_token_outputs
    from training.ml.winrate import sample_answers

    model.to(device)
    sample = prompts[:2]
    sample_answers(model, tokenizer, sample, seed=0, max_new_tokens=4)
    ids = torch.tensor([list(sample[0].input_ids)], device=device)
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=True,
                       pad_token_id=pad_id)
    model.train()
    out = answer_token_outputs(model, [p.input_ids for p in sample], [[(pad_id,)] for _ in sample], pad_id=pad_id,
                               shared_prefix=False)
    out["logprobs"].sum().backward()
    model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[:, -8:].sum().backward()
    model.zero_grad(set_to_none=True)
    sync(device)


def rates(result: dict) -> dict:
    """episodes/s, tokens/s and the generation and reward shares over the steps."""
    steps_s = result["steps_seconds"]
    result.update(
        episodes_per_s=result["episodes"] / steps_s, tokens_per_s=result["generated_tokens"] / steps_s,
        generation_share=result["generation_seconds"] / steps_s, reward_share=result["reward_seconds"] / steps_s,
        sampler_tokens_per_s=result["generated_tokens"] / max(result["generation_seconds"], 1e-9),
        reward_first_rollout=result["rollout_rewards"][0] if result["rollout_rewards"] else None,
        reward_last_rollout=result["rollout_rewards"][-1] if result["rollout_rewards"] else None,
    )
    return result


# --- The reward model -----------------------------------------------------------------------------

def train_reward_model(*, base: Path, rows: list[dict], seed: int, steps: int, device, work: Path) -> Path:
    """A quick reward model (the judge both sides learn from): run_training(kind="reward") with
    the default RewardConfig for `steps` steps on `rows`, untimed."""
    from training.ml.run import RunSpec, run_training

    out_dir = work / "reward" / "model"
    spec = RunSpec(kind="reward", base_path=str(base), output_dir=str(out_dir),
                   checkpoint_dir=str(work / "reward" / "checkpoints"),
                   config={"seed": seed, "max_steps": steps, "normalize_answers": REWARD_NORMALIZE_ANSWERS,
                           "checkpoint_every": steps + 1})
    run_training(spec, lambda: iter(rows), device=device)
    shutil.rmtree(work / "reward" / "checkpoints", ignore_errors=True)
    return out_dir


# --- The two sides --------------------------------------------------------------------------------

def run_ours(*, base: Path, rows: list[dict], config: dict, reward_model: Path, device, work: Path) -> dict:
    """run_training(kind="ppo") on the training rows, with sample_answers (generation) and
    reward_scores (the reward model) timed inside its steps."""
    import training.ml.ppo as ppo_module
    import training.ml.winrate as winrate
    from training.ml.run import RunSpec, run_training

    span = TrainSpan(device)
    generation = Clock(device)
    counts = {"episodes": 0, "tokens": 0, "stopped": 0, "rollouts": 0}
    original_sample = ppo_module.sample_answers
    reward = RewardRecorder(device)

    def timed_sample(*args, **kwargs):
        with generation:
            sampled = original_sample(*args, **kwargs)
        counts["rollouts"] += 1
        counts["episodes"] += len(sampled)
        counts["tokens"] += sum(len(ids) for ids, _, _ in sampled)
        counts["stopped"] += sum(1 for _, _, stopped in sampled if stopped)
        return sampled

    out_dir, ckpt_dir = work / "ours" / "model", work / "ours" / "checkpoints"
    spec = RunSpec(kind="ppo", base_path=str(base), config=config, output_dir=str(out_dir),
                   checkpoint_dir=str(ckpt_dir), reward_model_path=str(reward_model))
    ppo_module.sample_answers = timed_sample
    winrate.reward_scores = reward  # run._reward_fn imports it when the run starts
    try:
        w0 = time.perf_counter()
        output = run_training(spec, lambda: iter(rows), hooks=span.hooks(), device=device)
        run_s = time.perf_counter() - w0
    finally:
        ppo_module.sample_answers = original_sample
        winrate.reward_scores = reward.original
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    history = output.result.history
    rollouts = [h for h in history if h.get("score") is not None]  # a rollout's first step logs its metrics
    return rates({
        "variant": "ours", "steps": len(history), "rollouts": counts["rollouts"], "episodes": counts["episodes"],
        "generated_tokens": counts["tokens"], "stopped": counts["stopped"],
        "steps_seconds": span.end[0] - span.start[0], "steps_cpu_seconds": span.end[1] - span.start[1],
        "generation_seconds": generation.wall, "generation_cpu_seconds": generation.cpu,
        "reward_seconds": reward.clock.wall, "reward_calls": reward.clock.calls,
        "rollout_rewards": reward.means,
        "rollout_kl": [h.get("kl") for h in rollouts], "rollout_response_length": [h.get("response_length")
                                                                                  for h in rollouts],
        "step_seconds": [h["seconds"] for h in history], "loss_last": history[-1].get("loss") if history else None,
        "run_training_seconds": output.seconds, "run_training_wall": run_s, "checkpoints": span.checkpoints,
        "data": output.data["train"], "device": output.device,
    })


def trl_microbatch(minibatch: int, longest: int, budget: int) -> int:
    """Answers per forward for TRL: the largest divisor of `minibatch` whose rows of `longest`
    tokens fit `budget` padded tokens (at least 1)."""
    fitting = [b for b in range(1, minibatch + 1) if minibatch % b == 0 and b * longest <= budget]
    return max(fitting) if fitting else 1


def run_trl(*, base: Path, prompts, ppo_config, steps: int, epoch_steps: int, generations: int, reward_model: Path,
            device, precision: str, work: Path) -> dict:
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    from training.ml.models import (
        freeze_lower_layers,
        load_causal_lm_for_training,
        load_reward_model_for_scoring,
        load_tokenizer,
        resolve_train_layers,
    )

    disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="trl")
    os.environ["TQDM_DISABLE"] = "1"
    cfg = ppo_config
    tokenizer = load_tokenizer(base)

    # The prompts: our token ids, decoded to text for the dataset (pre-rendered: the chat
    # template is in the ids), handed back as our ids by _tokenize_prompts.
    texts = [tokenizer.decode(list(p.input_ids), skip_special_tokens=False) for p in prompts]
    ids_of: dict[str, tuple[int, ...]] = {}
    for text, p in zip(texts, prompts):
        if ids_of.setdefault(text, p.input_ids) != p.input_ids:
            raise SystemExit(f"Two prompts decode to the same text but differ in tokens (prompt {p.prompt_id}).")
    own_ids = tokenizer(text=texts)["input_ids"]  # what TRL 1.16 would do with text prompts
    round_trip = sum(1 for own, p in zip(own_ids, prompts) if list(own) == list(p.input_ids))
    by_id = {p.prompt_id: p for p in prompts}
    dataset = Dataset.from_dict({"prompt": texts, "prompt_id": [p.prompt_id for p in prompts]})

    longest = max(len(p.input_ids) for p in prompts) + cfg.max_new_tokens
    per_device = trl_microbatch(cfg.minibatch_prompts, longest, cfg.reward_max_length * 4)
    accumulation = cfg.minibatch_prompts // per_device

    judge, judge_tokenizer = load_reward_model_for_scoring(reward_model)
    judge.to(device)
    reward = RewardRecorder(device)

    def reward_model_score(prompts, completions, prompt_id, **kwargs):  # TRL's signature
        return reward(judge, judge_tokenizer, [by_id[i] for i in prompt_id], [clean_text(c) for c in completions],
                      max_length=cfg.reward_max_length, max_response_tokens=cfg.max_new_tokens + 1)

    model = load_causal_lm_for_training(base)
    model.config.pad_token_id = tokenizer.pad_token_id
    trained_layers = freeze_lower_layers(model, resolve_train_layers(cfg.train_layers, device=device, lora=cfg.lora))
    saving = {"save_strategy": "steps", "save_steps": cfg.checkpoint_every, "save_total_limit": cfg.keep_checkpoints}
    fields = RLOOConfig.__dataclass_fields__
    recompute_field = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    args = RLOOConfig(
        output_dir=str(work / "trl" / "checkpoints"), seed=cfg.seed, max_steps=steps,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_schedule, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, optim="adamw_torch_fused", adam_beta1=0.9, adam_beta2=0.95,
        adam_epsilon=1e-8, max_grad_norm=cfg.max_grad_norm,
        per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation,
        generation_batch_size=cfg.rollout_prompts, num_generations=generations, num_iterations=cfg.ppo_epochs,
        max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature, top_p=1.0, top_k=0,
        beta=cfg.kl_coef, epsilon=cfg.clip_range, normalize_advantages=True,
        reward_clip_range=(-cfg.reward_clip, cfg.reward_clip) if cfg.reward_clip else None,
        mask_truncated_completions=False, use_vllm=False, shuffle_dataset=True, log_completions=False,
        **{recompute_field: False}, bf16=precision == "bf16", fp16=False, use_cpu=device.type == "cpu",
        logging_steps=1, disable_tqdm=True, report_to="none", dataloader_num_workers=0,
        dataloader_pin_memory=device.type == "cuda", eval_strategy="no", **saving,
    )
    if cfg.lr_schedule == "constant":
        args.lr_scheduler_type = "constant_with_warmup"

    generation = Clock(device)
    counts = {"episodes": 0, "tokens": 0, "rollouts": 0, "stopped": 0}
    span: dict[str, tuple[float, float]] = {}
    step_ends: list[float] = []

    class Steps(TrainerCallback):
        """The steps' span (as TrainSpan for ours), and checkpoints where ours writes them: every
        `checkpoint_every` steps and at the end of each of our epochs (`epoch_steps`), never after
        the last step (ours leaves the finished model to the caller). Counts them."""

        saves = 0

        def on_step_begin(self, args, state, control, **kwargs):
            if "start" not in span:
                sync(device)
                span["start"] = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            span["end"] = (time.perf_counter(), time.process_time())
            step_ends.append(span["end"][0])
            if state.global_step >= state.max_steps:
                control.should_save = False
            elif state.global_step % epoch_steps == 0:
                control.should_save = True

        def on_save(self, *args, **kwargs):
            Steps.saves += 1

    class BenchRLOOTrainer(RLOOTrainer):
        """RLOOTrainer on our prompt token ids, its generation timed and counted."""

        def _tokenize_prompts(self, prompts):
            return [list(ids_of[p]) for p in prompts], None, {}

        def _generate(self, prompts):
            with generation:
                prompt_ids, completion_ids, completions = super()._generate(prompts)
            counts["rollouts"] += 1
            counts["episodes"] += len(completion_ids)
            counts["tokens"] += sum(len(c) for c in completion_ids)
            counts["stopped"] += sum(1 for c in completion_ids if c and c[-1] in self.eos_token_ids)
            return prompt_ids, completion_ids, completions

    t0 = time.perf_counter()
    trainer = BenchRLOOTrainer(model=model, reward_funcs=reward_model_score, args=args, train_dataset=dataset,
                               processing_class=tokenizer, callbacks=[Steps()])
    construct_s = time.perf_counter() - t0
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    print(f"  RLOOTrainer() {construct_s:.1f} s; training ...", flush=True)
    sync(device)
    w0 = time.perf_counter()
    trainer.train()
    sync(device)
    train_wall = time.perf_counter() - w0
    shutil.rmtree(work / "trl", ignore_errors=True)
    log = trainer.state.log_history
    rollouts = [h for h in log if "reward" in h]  # logged by a step that generated
    done = trainer.state.global_step
    starts = [span["start"][0]] + step_ends[:-1]
    result = rates({
        "variant": "trl", "steps": done, "rollouts": counts["rollouts"], "episodes": counts["episodes"],
        "generated_tokens": counts["tokens"], "stopped": counts["stopped"],
        "steps_seconds": span["end"][0] - span["start"][0], "steps_cpu_seconds": span["end"][1] - span["start"][1],
        "generation_seconds": generation.wall, "generation_cpu_seconds": generation.cpu,
        "reward_seconds": reward.clock.wall, "reward_calls": reward.clock.calls, "rollout_rewards": reward.means,
        "rollout_kl_per_token": [h.get("kl") for h in rollouts],
        "rollout_response_length": [h.get("completions/mean_length") for h in rollouts],
        "step_seconds": [round(e - s, 3) for s, e in zip(starts, step_ends)],
        "loss_last": next((h["loss"] for h in reversed(log) if "loss" in h), None),
        "trainer_train_seconds": train_wall, "trainer_construct_seconds": construct_s, "checkpoints": Steps.saves,
        "answers_per_microbatch": per_device, "gradient_accumulation": accumulation,
        "prompts_per_rollout": cfg.rollout_prompts // generations, "num_generations": generations,
        "longest_forward": longest, "prompts_tokenized_alike_by_trl": round_trip, "prompts": len(prompts),
        "eos_token_ids": list(trainer.eos_token_ids), "trained_layers": trained_layers,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "optimizer": getattr(args.optim, "value", str(args.optim)), "bf16": bool(args.bf16),
        "gradient_checkpointing": bool(getattr(args, recompute_field)),
        "config": {k: getattr(args, k) for k in (
            "generation_batch_size", "steps_per_generation", "num_generations", "num_iterations",
            "per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length", "temperature",
            "top_p", "top_k", "beta", "epsilon", "normalize_advantages", "reward_clip_range", "learning_rate",
            "warmup_steps", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "seed",
            "max_steps", "use_vllm", "bf16", recompute_field, "disable_dropout", "mask_truncated_completions")},
    })
    result["config"]["optim"] = result["optimizer"]
    result["config"]["lr_scheduler_type"] = getattr(args.lr_scheduler_type, "value", str(args.lr_scheduler_type))
    del trainer, model
    free_memory()
    return result


# --- Main -----------------------------------------------------------------------------------------

def fmt(value, spec=".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=0, help="train prompts (seeded subsample; default all)")
    parser.add_argument("--max-steps", type=int, default=8, help="optimizer steps of both sides (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="answer length (default: PPOConfig's)")
    parser.add_argument("--rollout-prompts", type=int, default=0, help="answers per rollout (default: PPOConfig's)")
    parser.add_argument("--minibatch-prompts", type=int, default=0,
                        help="answers per optimizer step (default: PPOConfig's, at most --rollout-prompts)")
    parser.add_argument("--max-prompt-tokens", type=int, default=0,
                        help="prompts cut from the left to this many tokens (default: PPOConfig's; smaller for smoke "
                             "tests)")
    parser.add_argument("--trl-generations", type=int, default=2,
                        help="RLOO's answers per prompt k (default 2, its minimum); it samples rollout_prompts/k "
                             "prompts per rollout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=os.environ.get("STUDIO_DEVICE", ""), help="cpu, cuda (default: auto)")
    parser.add_argument("--reward-model", default="", help="a reward model's directory (default: train one here)")
    parser.add_argument("--reward-steps", type=int, default=10, help="steps of the quick reward model (default 10)")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="checkpoint cadence for both sides (default: PPOConfig's)")
    parser.add_argument("--data", default=str(DATA_FILE), help="the fgrlhf JSON file")
    parser.add_argument("--model", default="", help="a HF model directory (default: the converted default model)")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--json", default="", help="also write the final JSON object here")
    args = parser.parse_args()

    require_trl(args)

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    scratch = scratch_dir("bench-ppo-")
    try:
        setup_django(str(scratch / "data"))
        import torch
        from training.ml.config import PPOConfig
        from training.ml.models import (
            freeze_lower_layers,
            load_causal_lm_for_training,
            load_tokenizer,
            resolve_precision,
            resolve_train_layers,
        )
        from training.ml.trainer import total_steps
        from training.ml.winrate import policy_prompts

        device, base = device_and_base(args)
        defaults = PPOConfig()
        config: dict = {"seed": args.seed, "max_steps": args.max_steps, "win_rate_prompts": 0}
        if args.max_new_tokens:
            config["max_new_tokens"] = args.max_new_tokens
        if args.max_prompt_tokens:
            config["max_prompt_tokens"] = args.max_prompt_tokens
        rollout = args.rollout_prompts or defaults.rollout_prompts
        config["rollout_prompts"] = rollout
        config["minibatch_prompts"] = args.minibatch_prompts or min(defaults.minibatch_prompts, rollout)
        if args.checkpoint_every:
            config["checkpoint_every"] = args.checkpoint_every
        cfg = PPOConfig(**config)
        config = cfg.as_dict()  # what our side is given; TRL's config is built from the same fields
        precision = resolve_precision(cfg.precision, device)
        notes: list[str] = []

        t0 = time.perf_counter()
        rows, data_info = import_and_snapshot(Path(args.data), IMPORT_FORMAT)
        prepare_s = time.perf_counter() - t0
        tokenizer = load_tokenizer(base)
        pad_id = tokenizer.pad_token_id

        def make(subset):  # what run_training's _ppo_prompts builds for the train split
            return policy_prompts(subset, tokenizer, split="train", limit=None,
                                  max_prompt_tokens=cfg.max_prompt_tokens, seed=cfg.seed)

        train_all = make(rows)
        rng = random.Random(args.seed)
        if args.prompts and args.prompts < len(train_all):
            chosen = {p.prompt_id for p in rng.sample(train_all, args.prompts)}
        else:
            chosen = {p.prompt_id for p in train_all}
        train_rows = [r for r in rows if r["split"] == "train" and r["prompt_id"] in chosen]
        prompts = make(train_rows)
        steps_per_rollout = math.ceil(cfg.rollout_prompts / cfg.minibatch_prompts) * cfg.ppo_epochs
        rollouts_per_epoch = math.ceil(len(prompts) / cfg.rollout_prompts)
        steps = total_steps(n_steps_per_epoch=rollouts_per_epoch * steps_per_rollout, config=cfg)
        prompt_lengths = [len(p.input_ids) for p in prompts]

        if not args.skip_trl:
            k = args.trl_generations
            if k < 2 or cfg.rollout_prompts % k or cfg.rollout_prompts % cfg.minibatch_prompts:
                sys.exit(f"TRL's side needs rollout_prompts ({cfg.rollout_prompts}) divisible by --trl-generations "
                         f"({k}, at least 2) and by minibatch_prompts ({cfg.minibatch_prompts}), so that both sides "
                         "take the same answers per rollout and per step.")
        if steps % steps_per_rollout:
            notes.append(f"max_steps {steps} is not a multiple of the {steps_per_rollout} steps per rollout: the last "
                         "rollout is sampled but only partly trained on (both sides alike)")
        if len(prompts) % cfg.rollout_prompts and steps > (len(prompts) // cfg.rollout_prompts) * steps_per_rollout:
            notes.append(f"{len(prompts)} prompts is not a multiple of rollout_prompts {cfg.rollout_prompts}: our last "
                         "rollout of the epoch is smaller (TRL drops an incomplete generation batch)")

        print(f"model {base.name} on {device} ({precision}); torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads, {platform.processor() or platform.machine()}"
              + (f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
        print(f"data: {data_info['file']} imported ({data_info['import_counts']}) and snapshotted "
              f"({data_info['snapshot_split']}) in {prepare_s:.1f} s")
        print(f"train: {len(prompts)} prompts (of {len(train_all)}), prompt tokens mean "
              f"{statistics.mean(prompt_lengths):.0f}, max {max(prompt_lengths)} (cut from the left to "
              f"{cfg.max_prompt_tokens})")
        print(f"config: steps {steps} ({steps_per_rollout} per rollout), rollout_prompts {cfg.rollout_prompts}, "
              f"minibatch_prompts {cfg.minibatch_prompts}, ppo_epochs {cfg.ppo_epochs}, max_new_tokens "
              f"{cfg.max_new_tokens}, temperature {cfg.temperature}, lr {cfg.learning_rate} ({cfg.lr_schedule}, "
              f"warm-up {cfg.warmup_ratio}), kl_coef {cfg.kl_coef} (adaptive {cfg.adaptive_kl}), clip_range "
              f"{cfg.clip_range}, reward_clip {cfg.reward_clip}, train_layers {cfg.train_layers}, checkpoint_every "
              f"{cfg.checkpoint_every}, seed {cfg.seed}")
        for note in notes:
            print(f"note: {note}")

        work = scratch / "runs"
        if args.reward_model:
            reward_model = Path(args.reward_model)
            reward_what = f"given: {reward_model}"
        else:
            print(f"reward model: training a quick one ({args.reward_steps} steps, untimed) ...", flush=True)
            t0 = time.perf_counter()
            reward_model = train_reward_model(base=base, rows=train_rows, seed=args.seed, steps=args.reward_steps,
                                              device=device, work=work)
            reward_what = (f"trained here: run_training(kind='reward'), {args.reward_steps} steps on the "
                           f"{len(prompts)} train prompts' rankings, {time.perf_counter() - t0:.0f} s")
            print(f"  {reward_what}", flush=True)
            free_memory()

        load_before = os.getloadavg()
        start = load_causal_lm_for_training(base)
        freeze_lower_layers(start, resolve_train_layers(cfg.train_layers, device=device, lora=cfg.lora))
        t0 = time.perf_counter()
        warm_up(start, tokenizer, prompts, pad_id=pad_id, device=device)
        print(f"warm-up (untimed): {time.perf_counter() - t0:.1f} s", flush=True)
        del start
        free_memory()

        results: dict[str, dict] = {}
        print("training: ours ...", flush=True)
        results["ours"] = run_ours(base=base, rows=train_rows, config=dict(config), reward_model=reward_model,
                                   device=device, work=work)
        print(f"  {results['ours']['steps']} steps {results['ours']['steps_seconds']:.1f} s", flush=True)
        free_memory()
        if not args.skip_trl:
            print(f"training: TRL RLOOTrainer (k={args.trl_generations}) ...", flush=True)
            results["trl"] = run_trl(base=base, prompts=prompts, ppo_config=cfg, steps=results["ours"]["steps"],
                                     epoch_steps=rollouts_per_epoch * steps_per_rollout, generations=args.trl_generations,
                                     reward_model=reward_model, device=device,
                                     precision=precision, work=work)
            print(f"  {results['trl']['steps']} steps {results['trl']['steps_seconds']:.1f} s", flush=True)
        load_after = os.getloadavg()

        labels = {"ours": "ours (PPO: value head, GAE, 1 answer per prompt)",
                  "trl": f"TRL RLOOTrainer ({args.trl_generations} answers per prompt, model.generate)"}
        print()
        print("| variant | steps | rollouts | episodes | generated tokens | steps s | generation s (share) "
              "| reward s (share) | episodes/s | tokens/s | sampler tokens/s | reward first -> last rollout |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for name, r in results.items():
            print(f"| {labels[name]} | {r['steps']} | {r['rollouts']} | {r['episodes']} | {r['generated_tokens']} | "
                  f"{r['steps_seconds']:.1f} | {r['generation_seconds']:.1f} ({100 * r['generation_share']:.0f}%) | "
                  f"{r['reward_seconds']:.1f} ({100 * r['reward_share']:.0f}%) | {r['episodes_per_s']:.3f} | "
                  f"{r['tokens_per_s']:.1f} | {r['sampler_tokens_per_s']:.1f} | "
                  f"{fmt(r['reward_first_rollout'], '+.3f')} -> {fmt(r['reward_last_rollout'], '+.3f')} |")
        print()
        ours = results["ours"]
        print(f"Reward model {reward_what}; one scorer for both sides (training.ml.winrate.reward_scores). "
              f"episodes/s = answers sampled and trained on / steps seconds; tokens/s = generated tokens (end-of-turn "
              f"included) / steps seconds; sampler tokens/s = generated tokens / generation seconds. Load average "
              f"before training {load_before[0]:.1f}, after {load_after[0]:.1f} ({os.cpu_count()} CPUs): other work "
              f"on the machine slows both sides' wall time.")
        print(f"ours: answers stopped at end-of-turn {ours['stopped']}/{ours['episodes']}, mean length per rollout "
              f"{[fmt(x, '.1f') for x in ours['rollout_response_length']]}, KL per answer per rollout "
              f"{[fmt(x, '.3f') for x in ours['rollout_kl']]}, step seconds {ours['step_seconds']}, run_training "
              f"phases {ours['run_training_seconds']}, checkpoints {ours['checkpoints']}.")
        ratios: dict = {}
        goal_share = ours["generation_share"] <= 0.5
        if "trl" in results:
            trl = results["trl"]
            ratios = {
                "ours_vs_trl_episodes_per_s": ours["episodes_per_s"] / trl["episodes_per_s"],
                "ours_vs_trl_tokens_per_s": ours["tokens_per_s"] / trl["tokens_per_s"],
                "ours_vs_trl_sampler_tokens_per_s": ours["sampler_tokens_per_s"] / trl["sampler_tokens_per_s"],
                "ours_vs_trl_cpu_s_per_episode": (trl["steps_cpu_seconds"] / trl["episodes"])
                / (ours["steps_cpu_seconds"] / ours["episodes"]),
            }
            goal = ratios["ours_vs_trl_episodes_per_s"] >= 1.0 and goal_share
            print(f"TRL: answers stopped at end-of-turn {trl['stopped']}/{trl['episodes']}, mean length per rollout "
                  f"{[fmt(x, '.1f') for x in trl['rollout_response_length']]}, KL per token per rollout "
                  f"{[fmt(x, '.4f') for x in trl['rollout_kl_per_token']]}, step seconds {trl['step_seconds']}, "
                  f"Trainer.train() {trl['trainer_train_seconds']:.1f} s, RLOOTrainer() "
                  f"{trl['trainer_construct_seconds']:.1f} s, checkpoints {trl['checkpoints']}.")
            print(f"TRL setup: RLOOConfig {trl['config']}; {trl['prompts_per_rollout']} prompts x "
                  f"{trl['num_generations']} answers per rollout; {trl['answers_per_microbatch']} answers per "
                  f"micro-batch x {trl['gradient_accumulation']} accumulation = {cfg.minibatch_prompts} per optimizer "
                  f"step (ours: micro-batches of {cfg.reward_max_length * 4} padded tokens); trained layers "
                  f"{trl['trained_layers']}, trainable parameters {trl['trainable_parameters']}; stop tokens "
                  f"{trl['eos_token_ids']}; TRL's own tokenization of the decoded prompts reproduces our ids for "
                  f"{trl['prompts_tokenized_alike_by_trl']}/{trl['prompts']} (ours are handed over either way).")
            print(f"ours / TRL: {ratios['ours_vs_trl_episodes_per_s']:.2f}x episodes/s, "
                  f"{ratios['ours_vs_trl_tokens_per_s']:.2f}x tokens/s, {ratios['ours_vs_trl_sampler_tokens_per_s']:.2f}x "
                  f"sampler tokens/s, {ratios['ours_vs_trl_cpu_s_per_episode']:.2f}x per CPU second; generation share "
                  f"{100 * ours['generation_share']:.0f}% vs {100 * trl['generation_share']:.0f}%. Goal (>= 1.0x TRL's "
                  f"episodes/s with generation <= 50% of step time): {'met' if goal else 'NOT met'}.")
        else:
            print(f"ours: generation share {100 * ours['generation_share']:.0f}% (goal <= 50%: "
                  f"{'met' if goal_share else 'NOT met'}); TRL skipped.")
        summary = {
            "benchmark": "ppo", "device": str(device), "precision": precision, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "model": base.name, "data": data_info, "train_prompts": len(prompts),
            "prompt_tokens": {"mean": statistics.mean(prompt_lengths), "max": max(prompt_lengths)},
            "config": config, "steps": steps, "steps_per_rollout": steps_per_rollout, "reward_model": reward_what,
            "notes": notes,
            "load_average": {"before_training": load_before, "after_training": load_after, "cpus": os.cpu_count()},
            "variants": results, "ratios": ratios,
        }
        emit_summary(summary, args.json)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
