"""Learning, not just running: on the tiny random model the reward model learns a rule it can
only see in the text, SFT lowers the validation loss, and a run killed at a checkpoint and
resumed ends where an uninterrupted run ends."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from training.ml import checkpoints as ckpt
from training.ml.data import reward_groups
from modelhub.loading import read_reward_offset
from training.ml.models import (answer_logprobs, load_causal_lm_for_training, load_reward_model_for_training,
                                load_tokenizer, reward_pad_token)
from training.ml.reward import reward_evaluate
from training.ml.run import RunSpec, TrainingDataError, run_training
from training.ml.trainer import Hooks

from tests.training.ml.conftest import marker_rows

REWARD = {"learning_rate": 3e-3, "epochs": 3, "prompts_per_step": 8, "checkpoint_every": 5, "seed": 1}
SFT = {"learning_rate": 3e-3, "epochs": 2, "batch_size": 8, "checkpoint_every": 5, "seed": 1}
DPO = {"learning_rate": 1e-3, "epochs": 3, "prompts_per_step": 8, "checkpoint_every": 5, "seed": 1, "beta": 0.5}


class Stop(Exception):
    pass


def spec(tmp_path, kind, config, base, name="run"):
    return RunSpec(kind=kind, base_path=str(base), config=config, output_dir=str(tmp_path / name / "model"),
                   checkpoint_dir=str(tmp_path / name / "checkpoints"))


def weights(path):
    from safetensors.torch import load_file

    return load_file(next(path.glob("*.safetensors")))


def test_reward_model_learns_a_rule_it_only_sees_in_the_text(tmp_path, tiny_model_dir, rows):
    tokenizer = load_tokenizer(tiny_model_dir)
    reward_pad_token(tokenizer)
    validation, _ = reward_groups(rows, tokenizer, split="validation", max_length=512, max_response_tokens=64)
    untrained = load_reward_model_for_training(tiny_model_dir, tokenizer=tokenizer, seed=1)
    before = reward_evaluate(untrained, validation, pad_id=tokenizer.pad_token_id, device=torch.device("cpu"))

    logged, evaluated = [], []
    out = run_training(spec(tmp_path, "reward", REWARD, tiny_model_dir), lambda: iter(rows),
                       hooks=Hooks(log=logged.append, evaluate=evaluated.append))
    assert out.data["train"]["examples"] == 96 and out.data["validation"]["examples"] == 24  # held out
    assert out.metrics["validation/accuracy"] >= 0.9, out.metrics
    assert before["accuracy"] < 0.8  # it was not right before training
    low, high = out.metrics["validation/accuracy_ci"]
    assert low <= out.metrics["validation/accuracy"] <= high and out.metrics["validation/pairs"] == 48
    assert logged[-1]["loss"] < logged[0]["loss"] * 0.5
    assert [e["step"] for e in evaluated] == [12, 24, 36]  # each epoch's end

    trained = weights(out.output_dir)
    initial = load_reward_model_for_training(tiny_model_dir, tokenizer=tokenizer, seed=1).state_dict()
    assert not torch.equal(trained["score.weight"], initial["score.weight"])
    assert not torch.equal(trained["model.layers.0.self_attn.q_proj.weight"],
                           initial["model.layers.0.self_attn.q_proj.weight"])
    # Normalised: the training split's best answers score mean 0 once the offset is subtracted.
    assert out.reward_offset["answers"] == 96
    assert read_reward_offset(out.output_dir) == pytest.approx(out.reward_offset["mean"])


def test_the_reward_offset_is_taken_over_a_seeded_sample_of_the_best_answers(tmp_path, tiny_model_dir, rows):
    config = {**REWARD, "max_steps": 1, "normalize_answers": 10}
    one = run_training(spec(tmp_path, "reward", config, tiny_model_dir, "one"), lambda: iter(rows))
    two = run_training(spec(tmp_path, "reward", config, tiny_model_dir, "two"), lambda: iter(rows))
    every = run_training(spec(tmp_path, "reward", {**config, "normalize_answers": 1000}, tiny_model_dir, "all"),
                         lambda: iter(rows))
    assert one.reward_offset["answers"] == 10 and every.reward_offset["answers"] == 96
    assert one.reward_offset["mean"] == two.reward_offset["mean"]  # the same sample each time
    assert one.reward_offset["mean"] != every.reward_offset["mean"]


def test_sft_lowers_the_validation_loss(tmp_path, tiny_model_dir, rows):
    evaluated = []
    out = run_training(spec(tmp_path, "sft", {**SFT, "eval_every": 1, "max_steps": 20}, tiny_model_dir),
                       lambda: iter(rows), hooks=Hooks(evaluate=evaluated.append))
    first, last = evaluated[0]["validation/loss"], evaluated[-1]["validation/loss"]
    assert last < first * 0.7, (first, last)
    assert out.metrics["validation/examples"] == 24 and out.result.steps == 20
    assert (out.output_dir / "config.json").exists() and (out.output_dir / "tokenizer_config.json").exists()


def test_dpo_learns_to_prefer_the_answers_its_rankings_prefer(tmp_path, tiny_model_dir, rows):
    logged, evaluated = [], []
    out = run_training(spec(tmp_path, "dpo", {**DPO, "eval_every": 6}, tiny_model_dir), lambda: iter(rows),
                       hooks=Hooks(log=logged.append, evaluate=evaluated.append))
    assert out.data["train"]["pairs"] == 192 and out.data["validation"]["pairs"] == 48  # held out
    first, last = evaluated[0], evaluated[-1]
    assert last["validation/accuracy"] >= 0.9, evaluated
    assert last["validation/loss"] < first["validation/loss"] < math.log(2)
    assert last["validation/reward_margin"] > 0
    assert out.metrics["validation/pairs"] == 48 and out.metrics["validation/prompts"] == 24
    low, high = out.metrics["validation/accuracy_ci"]
    assert low <= out.metrics["validation/accuracy"] <= high
    assert logged[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # the policy starts as its reference
    assert logged[-1]["loss"] < 0.5 * math.log(2)
    assert logged[-1]["reward_margin"] > logged[0]["reward_margin"] == pytest.approx(0, abs=1e-4)
    # Checked without the task's own metrics: the saved policy, against the base, raised the
    # log-probability of the held-out answers that end in the marker over the others.
    tokenizer = load_tokenizer(tiny_model_dir)
    groups, _ = reward_groups(rows, tokenizer, split="validation", max_length=512, max_response_tokens=256)

    def logps(path):
        model = load_causal_lm_for_training(path)
        with torch.no_grad():
            return answer_logprobs(model, [g.prompt_ids for g in groups], [g.responses for g in groups],
                                   pad_id=tokenizer.pad_token_id)[0]

    ratio, offset, wins = logps(out.output_dir) - logps(tiny_model_dir), 0, []
    for g in groups:  # each group's pairs rank its marked answer over the two others
        wins += [bool(ratio[offset + better] > ratio[offset + worse]) for better, worse, _ in g.pairs]
        offset += len(g.responses)
    assert len(wins) == 48
    assert sum(wins) / len(wins) >= 0.9, sum(wins) / len(wins)
    trained = weights(out.output_dir)
    initial = load_file(next(tiny_model_dir.glob("*.safetensors")))
    assert not torch.equal(trained["model.layers.0.self_attn.q_proj.weight"],
                           initial["model.layers.0.self_attn.q_proj.weight"])


def test_dpo_reads_its_cached_reference_when_resumed(tmp_path, tiny_model_dir, rows, monkeypatch):
    from training.ml import dpo

    config = {**DPO, "max_steps": 8}

    def die_at_step_7(record):
        if record["step"] == 7:
            raise Stop()

    with pytest.raises(Stop):
        run_training(spec(tmp_path, "dpo", config, tiny_model_dir), lambda: iter(rows), hooks=Hooks(log=die_at_step_7))
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*" + dpo.REFERENCE_FILE))
    assert saved == ["train-" + dpo.REFERENCE_FILE, "validation-" + dpo.REFERENCE_FILE]
    calls = []
    original = dpo.reference_logprobs
    monkeypatch.setattr(dpo, "reference_logprobs", lambda *a, **k: calls.append(1) or original(*a, **k))
    resumed = run_training(spec(tmp_path, "dpo", config, tiny_model_dir), lambda: iter(rows))
    assert resumed.result.resumed_from == 5 and calls == []
    # Other examples (another max_length) do not take a reference computed for these.
    other = {**config, "max_response_tokens": 4}
    run_training(spec(tmp_path, "dpo", {**other, "max_steps": 1}, tiny_model_dir, "other"), lambda: iter(rows))
    assert calls == [1, 1]


@pytest.mark.parametrize("kind,config", [("reward", REWARD), ("sft", SFT), ("dpo", DPO)])
def test_a_run_killed_after_a_checkpoint_resumes_and_ends_where_an_uninterrupted_run_ends(
        tmp_path, tiny_model_dir, rows, kind, config):
    whole = run_training(spec(tmp_path, kind, config, tiny_model_dir, "whole"), lambda: iter(rows))

    def die_at_step_8(record):
        if record["step"] == 8:
            raise Stop()  # as if the worker were killed: after checkpoint 5, three steps lost

    with pytest.raises(Stop):
        run_training(spec(tmp_path, kind, config, tiny_model_dir, "killed"), lambda: iter(rows),
                     hooks=Hooks(log=die_at_step_8))
    assert [c.step for c in ckpt.checkpoints(tmp_path / "killed" / "checkpoints")] == [5]
    logged = []
    resumed = run_training(spec(tmp_path, kind, config, tiny_model_dir, "killed"), lambda: iter(rows),
                           hooks=Hooks(log=logged.append))
    assert resumed.result.resumed_from == 5 and logged[0]["step"] == 6  # continued, not restarted
    assert resumed.result.steps == whole.result.steps
    for key, value in whole.metrics.items():
        if isinstance(value, float):
            assert resumed.metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    a, b = weights(whole.output_dir), weights(resumed.output_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_checkpoints_keep_only_the_newest_two(tmp_path, tiny_model_dir, rows):
    seen = []
    run_training(spec(tmp_path, "reward", {**REWARD, "checkpoint_every": 2, "epochs": 1}, tiny_model_dir),
                 lambda: iter(rows), hooks=Hooks(checkpoint=lambda step, path: seen.append(step)))
    assert seen == [2, 4, 6, 8, 10]  # 12 steps; the last is the saved model, not a checkpoint
    kept = ckpt.checkpoints(tmp_path / "run" / "checkpoints")
    assert [c.step for c in kept] == [8, 10]
    files = {p.name for p in kept[-1].path.iterdir()}
    assert files == {"trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json"}
    assert json.loads((kept[-1].path / "state.json").read_text())["step"] == 10


def test_lora_trains_an_adapter_and_leaves_the_base_alone(tmp_path, tiny_model_dir, rows):
    out = run_training(spec(tmp_path, "reward", {**REWARD, "lora": True, "lora_r": 4, "learning_rate": 1e-2},
                            tiny_model_dir), lambda: iter(rows))
    files = {p.name for p in out.output_dir.iterdir()}
    assert "adapter_config.json" in files and "adapter_model.safetensors" in files
    assert "model.safetensors" not in files  # the adapter only; the base is its parent
    adapter = weights(out.output_dir)
    assert any("lora_A" in k for k in adapter) and any("score" in k for k in adapter)
    assert out.metrics["validation/accuracy"] >= 0.75, out.metrics


def test_no_training_examples_is_a_clear_error(tmp_path, tiny_model_dir):
    unranked = [dict(r, consensus=None, rankings=[], demonstrations=[]) for r in marker_rows(10)]
    with pytest.raises(TrainingDataError, match="has no rankings with at least one untied pair"):
        run_training(spec(tmp_path, "reward", REWARD, tiny_model_dir), lambda: iter(unranked))
    with pytest.raises(TrainingDataError, match="no demonstrations"):
        run_training(spec(tmp_path, "sft", SFT, tiny_model_dir), lambda: iter(unranked))
    # Labels that all fell in the validation split are trained on, and nothing is held out.
    only_validation = [dict(r, split="validation") for r in marker_rows(10)]
    out = run_training(spec(tmp_path, "reward", {**REWARD, "epochs": 1}, tiny_model_dir),
                       lambda: iter(only_validation))
    assert out.data["held_out"] is False and "held none out" in out.data["note"]
    assert out.result.steps == 2 and not any(k.startswith("validation/") for k in out.metrics)


def test_train_layers_freezes_everything_below_the_top_layers(tmp_path, tiny_model_dir, rows):
    out = run_training(spec(tmp_path, "reward", {**REWARD, "epochs": 1, "train_layers": 1}, tiny_model_dir),
                       lambda: iter(rows))
    tokenizer = load_tokenizer(tiny_model_dir)
    reward_pad_token(tokenizer)
    initial = load_reward_model_for_training(tiny_model_dir, tokenizer=tokenizer, seed=1).state_dict()
    trained = weights(out.output_dir)
    frozen = [k for k in initial if k.startswith(("model.embed_tokens", "model.layers.0."))]
    moved = [k for k in initial if k.startswith(("model.layers.1.", "score"))]
    assert frozen and moved
    assert all(torch.equal(trained[k], initial[k]) for k in frozen)
    assert all(not torch.equal(trained[k], initial[k]) for k in moved if k.endswith("weight"))
