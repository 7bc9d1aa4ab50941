"""Fixtures for the pure trainers (training.ml): snapshot-shaped rows with a learnable rule, and
the tiny random model. No database: these tests call the functions directly."""
from __future__ import annotations

import random

import pytest

WORDS = ("the capital of France is Paris and Italy Rome explain photosynthesis plants light water sugar "
         "a helpful assistant answers the question honest harm poem sea wind stars night").split()
MARKER = "step by step"


def marker_rows(n: int = 120, *, seed: int = 0, validation_every: int = 5) -> list[dict]:
    """Snapshot rows whose consensus ranks the answer ending in MARKER first and two random
    answers tied below it: a rule a reward model can learn from the text alone. Every
    `validation_every`-th prompt is in the validation split; each prompt has a demonstration
    (the marked answer)."""
    rng = random.Random(seed)

    def phrase(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    rows = []
    for i in range(n):
        good = f"{phrase(rng.randint(3, 6))} {MARKER}"
        ids = [10 * i + 1, 10 * i + 2, 10 * i + 3]
        texts = [good, phrase(rng.randint(4, 8)), phrase(rng.randint(4, 8))]
        order = list(range(3))
        rng.shuffle(order)  # candidates in random id order: position says nothing
        candidates = [{"id": ids[k], "text": texts[order[k]]} for k in range(3)]
        best = ids[order.index(0)]
        rest = [c for c in ids if c != best]
        rows.append({
            "prompt_id": i + 1, "messages": [{"role": "user", "content": phrase(6)}], "documents": [],
            "split": "validation" if i % validation_every == 0 else "train", "source": "written",
            "source_format": "", "candidates": candidates,
            "rankings": [{"id": 1000 + i, "annotator": "a1", "ranking": [[best], rest], "ratings": {}}],
            "consensus": {"ranking": [[best], rest], "labels": [1000 + i]},
            "demonstrations": [{"id": i + 1, "text": good}],
        })
    return rows


@pytest.fixture
def rows():
    return marker_rows()


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from training.ml.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def marker_reward_model(tmp_path_factory, tiny_model_dir):
    """A reward model trained on the marker rule (answers ending in MARKER are preferred)."""
    from training.ml.run import RunSpec, run_training

    folder = tmp_path_factory.mktemp("marker-rm")
    config = {"learning_rate": 3e-3, "epochs": 3, "prompts_per_step": 8, "seed": 1}
    out = run_training(RunSpec(kind="reward", base_path=str(tiny_model_dir), config=config,
                               output_dir=str(folder / "model"), checkpoint_dir=str(folder / "checkpoints")),
                       lambda: iter(marker_rows()))
    assert out.metrics["validation/accuracy"] >= 0.9
    return out.output_dir
