"""Best-of-n: n answers per training prompt from the starting model, the reward model keeps the
best of each, and the model fine-tuned on them beats its start by the reward model's judgement;
the kept answers are listed for the run page, and a resumed run does not sample again."""
from __future__ import annotations

from training.ml import best_of_n
from training.ml.run import RunSpec, run_training

CONFIG = {"n": 4, "max_new_tokens": 16, "max_prompts": 48, "learning_rate": 3e-3, "epochs": 3, "batch_size": 8,
          "win_rate_max_new_tokens": 16, "seed": 1}


def spec(tmp_path, reward_model, config=CONFIG):
    return RunSpec(kind="best_of_n", base_path=None, config=config, output_dir=str(tmp_path / "model"),
                   checkpoint_dir=str(tmp_path / "checkpoints"), reward_model_path=str(reward_model))


def test_best_of_n_keeps_the_reward_models_favourite_and_learns_from_it(tmp_path, tiny_model_dir, rows,
                                                                        marker_reward_model):
    run_spec = spec(tmp_path, marker_reward_model)
    run_spec.base_path = str(tiny_model_dir)
    out = run_training(run_spec, lambda: iter(rows))
    kept = out.data["best_of_n"]
    assert kept["prompts"] == 48 and kept["n"] == 4 and out.data["train"]["examples"] == 48
    assert kept["mean_best_score"] > kept["mean_score"]  # the best of four beats the average answer
    for row in kept["kept"]:
        assert len(row["scores"]) == 4 and row["score"] == max(row["scores"])
    assert out.data["validation"]["examples"] == 24  # the validation demonstrations measure it
    assert out.metrics["validation/loss"] > 0
    # Measured: 0.667 [0.458, 0.833] on the 24 held-out prompts (seeded, so the same every run).
    assert out.win_rate["prompts"] == 24 and out.win_rate["win_rate"] > 0.5, out.win_rate
    assert (tmp_path / "checkpoints" / best_of_n.SAMPLES_FILE).exists()


def test_a_resumed_best_of_n_run_reads_its_samples_back(tmp_path, tiny_model_dir, rows, marker_reward_model,
                                                        monkeypatch):
    config = {**CONFIG, "max_steps": 2, "win_rate_prompts": 0}
    run_spec = spec(tmp_path, marker_reward_model, config)
    run_spec.base_path = str(tiny_model_dir)
    first = run_training(run_spec, lambda: iter(rows))
    calls = []
    monkeypatch.setattr(best_of_n, "sample_answers", lambda *a, **k: calls.append(1))
    again = run_training(run_spec, lambda: iter(rows))
    assert calls == [] and again.data["best_of_n"] == first.data["best_of_n"]
