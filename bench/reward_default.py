"""Benchmark: what a user gets who imports ~1,500 preference pairs of multi-turn dialogue, makes a
snapshot and presses Train with the default model and the default config.

    .venv/bin/python bench/reward_default.py [--pairs 1500] [--seed 0] [--config '{}'] [--json PATH]

The claim it checks (issue "Training I"): a reward model in under 30 minutes on the 2-core
development machine, using every pair, with a validation accuracy worth having.

Data: multi-turn dialogues in the Anthropic-HH format ("\\n\\nHuman: …\\n\\nAssistant: …", the
`jsonl` importer's "chosen"/"rejected"), built from ../shared/data/fgrlhf_qa_dev_feedback.json so
that the final turn's preference is a real human judgement: each dialogue opens with another
question of the set and its reference answer (an earlier exchange), then asks the item's
question; "chosen" and "rejected" end with the two answers a human compared (ties left out),
up to 4 pairs per question. No passages: the prompts are conversation, as in HH.

Everything goes through the product, in this process, on a private SQLite database: the jsonl
import, a default snapshot (10% of prompts validate), then a training run created with
training.runs.training_run_create(config={}) and executed as a worker would
(training_run_execute). Timed: from the run's start to its registered model, which is what the
user waits for (model loading, data, training, normalisation, validation, saving).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FGRLHF = ROOT.parent / "shared" / "data" / "fgrlhf_qa_dev_feedback.json"
PAIR_ORDER = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))  # the order of fgrlhf's "preference"


def multi_turn_pairs(n_pairs: int, *, seed: int) -> list[dict]:
    """HH-format preference rows: an earlier exchange (another item's question and reference
    answer), then the item's question, answered by the two predictions a human compared
    (1 = the first better, 2 = the second; 0 = tie, left out)."""
    items = json.loads(FGRLHF.read_text())
    rng = random.Random(seed)
    rows = []
    for index, item in enumerate(items):
        other = items[(index + 1 + rng.randrange(len(items) - 1)) % len(items)]
        history = f"\n\nHuman: {other['question'].strip()}\n\nAssistant: {other['gold'].strip()}"
        judged = [(pair, value) for pair, value in zip(PAIR_ORDER, item["preference"]) if value in (1, 2)]
        rng.shuffle(judged)
        for (a, b), value in judged[:4]:
            better, worse = (a, b) if value == 1 else (b, a)
            ask = f"{history}\n\nHuman: {item['question'].strip()}\n\nAssistant: "
            rows.append({"id": f"fgrlhf-{index}-{a}{b}",
                         "chosen": ask + item[f"prediction {better}"].strip(),
                         "rejected": ask + item[f"prediction {worse}"].strip()})
    rng.shuffle(rows)
    return rows[:n_pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="{}", help="Training config overrides (JSON); {} is the default.")
    parser.add_argument("--json", help="Also write the figures to this file.")
    args = parser.parse_args()

    from bench.common import import_and_snapshot, setup_django

    tmp = tempfile.mkdtemp(prefix="bench-reward-default-")
    try:
        setup_django(tmp)
        from modelhub.default_model import default_model_ensure
        from training import runs
        from training.models import DatasetSnapshot, ModelEvaluation

        pairs = multi_turn_pairs(args.pairs, seed=args.seed)
        data = Path(tmp) / "multi_turn_pairs.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in pairs))
        rows, summary = import_and_snapshot(data, "jsonl")
        snapshot = DatasetSnapshot.objects.get(sha256=summary["snapshot_sha256"])
        base = default_model_ensure()
        run = runs.training_run_create(user=None, kind="reward", base_model=base, snapshot=snapshot,
                                       config=json.loads(args.config), enqueue=False)
        t0 = time.perf_counter()
        run = runs.training_run_execute(run_id=run.pk, worker="bench")
        seconds = time.perf_counter() - t0
        if run.status != "succeeded":
            sys.exit(f"The run {run.status}: {run.error}")
        evaluation = ModelEvaluation.objects.filter(model=run.model).first()
        stats = run.data_stats
        result = {
            "pairs_imported": len(pairs), "prompts": summary["import_counts"].get("prompts"),
            "train_pairs_used": stats["train"]["pairs"], "validation_pairs": stats["validation"]["pairs"],
            "identical_pairs": stats["train"]["identical_pairs"] + stats["validation"]["identical_pairs"],
            "truncated_prompts": stats["train"]["truncated_prompts"],
            "truncated_answers": stats["train"]["truncated_responses"],
            "wall_seconds": round(seconds, 1), "steps": run.total_steps,
            "validation_accuracy": evaluation.accuracy if evaluation else None,
            "validation_accuracy_ci": evaluation.results.get("accuracy_ci") if evaluation else None,
            "config": run.config, "device": run.device, "cpu_count": os.cpu_count(),
        }
        print(f"{result['pairs_imported']} multi-turn pairs imported ({result['prompts']} prompts); trained on "
              f"{result['train_pairs_used']} pairs, validated on {result['validation_pairs']} held-out pairs; "
              f"{result['identical_pairs']} identical after truncation.")
        ci = result["validation_accuracy_ci"] or [None, None]
        print(f"Press Train -> registered reward model in {seconds / 60:.1f} min ({run.total_steps} steps, "
              f"{run.device}); validation accuracy {result['validation_accuracy']} (95% CI {ci[0]}-{ci[1]}).")
        print(json.dumps(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
