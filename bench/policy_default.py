"""Benchmark: the InstructGPT loop with every default, as a user runs it in the product: import
FineGrainedRLHF, snapshot it, train an SFT model and a reward model, then train a policy from the
SFT model (DPO, PPO or best-of-n) judged by that reward model, and report what the policy gained.

    .venv/bin/python bench/policy_default.py [--kind dpo|ppo|best_of_n] [--start default|sft]
        [--data fgrlhf|dialogue] [--data-dir DIR]
        [--config '{}'] [--sft-config '{}'] [--reward-config '{}'] [--json PATH]

The claim it checks (issue "Training II"): with the default model and default configs on the
2-core development machine, the policy beats the SFT model by the reward model's win rate on
held-out prompts, with a 95% interval, next to the KL it cost, in under 30 minutes per run.

Everything goes through the product in this process, on a private SQLite database and model
store in --data-dir (a temporary folder unless given): the `fgrlhf` import (questions with their
passages, four answers, the human pairwise preferences as a ranking, the human-corrected answer
as a demonstration) or, with --data dialogue, bench/reward_default.py's 1,500 multi-turn
Human/Assistant pairs built from the same human preferences without the passages (the `jsonl`
import; prompts ~135 tokens instead of ~1,000, no demonstrations), a default snapshot (10% of
prompts validate), then training runs created with training.runs.training_run_create and
executed as a worker would. With --data-dir, runs that
already succeeded there with the same kind and config are reused: the SFT model and reward model
are trained once, and the policy can be trained again with another --config.

The policy starts from the default model itself (--start default, the default): SmolLM2-135M-
Instruct is already a supervised fine-tuned model, and an SFT run of our own on FineGrainedRLHF's
487 demonstrations (passages make its prompts ~1,000 tokens) takes about an hour on the 2-core
machine. --start sft trains that SFT model first and starts the policy from it.

Timed: each run from its start to its registered model (loading, data, the reference pass,
training, the win-rate evaluation, saving).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FGRLHF = ROOT.parent / "shared" / "data" / "fgrlhf_qa_dev_feedback.json"


def _run(kind: str, *, base, snapshot, config: dict, reward_model=None):
    """A succeeded run of `kind` with `config` (reused when the database has one), and the
    seconds this call spent."""
    from training import runs
    from training.ml.config import config_from_dict
    from training.models import TrainingRun

    full = config_from_dict(kind, config).as_dict()
    done = TrainingRun.objects.filter(kind=kind, base_model=base, snapshot=snapshot, status="succeeded",
                                      reward_model=reward_model).order_by("-pk")
    for run in done:
        if run.config == full:
            print(f"{kind}: reusing run {run.pk} (model {run.model.name})", flush=True)
            return run, 0.0
    run = runs.training_run_create(user=None, kind=kind, base_model=base, snapshot=snapshot, config=config,
                                   reward_model=reward_model, enqueue=False)
    print(f"{kind}: run {run.pk} from {base.name} ...", flush=True)
    t0 = time.perf_counter()
    run = runs.training_run_execute(run_id=run.pk, worker="bench")
    seconds = time.perf_counter() - t0
    if run.status != "succeeded":
        sys.exit(f"The {kind} run {run.status}: {run.error}")
    print(f"{kind}: {seconds / 60:.1f} min, {run.total_steps} steps ({run.device})", flush=True)
    return run, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", default="dpo", choices=["dpo", "ppo", "best_of_n"])
    parser.add_argument("--start", default="default", choices=["default", "sft"],
                        help="the policy's starting model: the default model (an instruction-tuned SFT model) or "
                             "an SFT run of ours on the snapshot")
    parser.add_argument("--data", default="fgrlhf", choices=["fgrlhf", "dialogue"],
                        help="fgrlhf: the `fgrlhf` import (questions with their passages, ~1,000-token prompts); "
                             "dialogue: bench/reward_default.py's 1,500 multi-turn pairs built from the same "
                             "human preferences, without passages (the `jsonl` import)")
    parser.add_argument("--data-dir", default="", help="keep the database and models here (reused next time)")
    parser.add_argument("--config", default="{}", help="the policy run's config overrides (JSON)")
    parser.add_argument("--sft-config", default="{}")
    parser.add_argument("--reward-config", default="{}")
    parser.add_argument("--json", help="Also write the figures to this file.")
    args = parser.parse_args()

    from bench.common import setup_django

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="bench-policy-default-")
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    setup_django(data_dir)
    from django.core.management import call_command

    from modelhub.default_model import default_model_ensure
    from training.models import DatasetSnapshot

    call_command("migrate", verbosity=0)
    snapshot = DatasetSnapshot.objects.order_by("pk").first()
    if snapshot is None:
        from bench.common import import_and_snapshot

        if args.data == "dialogue":
            from bench.reward_default import multi_turn_pairs

            path = Path(data_dir) / "multi_turn_pairs.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in multi_turn_pairs(1500, seed=0)))
            _, summary = import_and_snapshot(path, "jsonl", needs="rankings")
        else:
            _, summary = import_and_snapshot(FGRLHF, "fgrlhf", needs="rankings")
        snapshot = DatasetSnapshot.objects.get(sha256=summary["snapshot_sha256"])
    print(f"snapshot {snapshot.short_hash}: {snapshot.counts}", flush=True)
    base = default_model_ensure()
    sft, sft_seconds = None, 0.0
    if args.start == "sft":
        sft, sft_seconds = _run("sft", base=base, snapshot=snapshot, config=json.loads(args.sft_config))
    rm, rm_seconds = _run("reward", base=base, snapshot=snapshot, config=json.loads(args.reward_config))
    start = sft.model if sft else base
    policy, policy_seconds = _run(args.kind, base=start, snapshot=snapshot, config=json.loads(args.config),
                                  reward_model=rm.model)
    win = policy.metrics.get("win_rate") or {}
    result = {
        "kind": args.kind, "data": args.data, "snapshot": snapshot.sha256, "counts": snapshot.counts, "device": policy.device,
        "cpu_count": os.cpu_count(),
        "start": start.name,
        "sft": {"run": sft.pk, "minutes": round(sft_seconds / 60, 1), "steps": sft.total_steps,
                "validation_loss": sft.metrics.get("validation/loss")} if sft else None,
        "reward": {"run": rm.pk, "minutes": round(rm_seconds / 60, 1), "steps": rm.total_steps,
                   "validation_accuracy": rm.metrics.get("validation/accuracy"),
                   "validation_accuracy_ci": rm.metrics.get("validation/accuracy_ci"),
                   "validation_pairs": rm.metrics.get("validation/pairs")},
        "policy": {"run": policy.pk, "minutes": round(policy_seconds / 60, 1), "steps": policy.total_steps,
                   "config": policy.config, "train": policy.data_stats["train"],
                   "validation_accuracy": policy.metrics.get("validation/accuracy"),
                   "validation_accuracy_ci": policy.metrics.get("validation/accuracy_ci"),
                   "validation_reward_margin": policy.metrics.get("validation/reward_margin"),
                   "win_rate": {k: v for k, v in win.items() if k != "examples"}},
    }
    if win.get("prompts"):
        low, high = win["win_rate_ci"]
        print(f"{args.kind} policy vs its start ({start.name}), judged by the reward model on {win['prompts']} held-out prompts: "
              f"win rate {win['win_rate']:.3f} [{low:.3f}, {high:.3f}] ({win['wins']} won, {win['ties']} tied, "
              f"{win['losses']} lost); KL {win['kl']:.2f} nats per answer; mean reward {win['reward_policy']:.3f} vs "
              f"{win['reward_reference']:.3f}; {policy_seconds / 60:.1f} min for the run.")
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
