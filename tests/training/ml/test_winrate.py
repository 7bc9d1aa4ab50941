"""A policy's win rate over the model it started from, judged by a reward model: a policy that
learned what the reward model learned wins, with an interval that excludes a coin flip; a policy
judged against itself ties every prompt at zero KL."""
from __future__ import annotations

import pytest

from training.ml.models import load_causal_lm_for_training, load_reward_model_for_scoring, load_tokenizer
from training.ml.run import RunSpec, run_training
from training.ml.trainer import Hooks
from training.ml.winrate import policy_prompts, policy_win_rate

from tests.training.ml.conftest import MARKER

DPO = {"learning_rate": 3e-3, "epochs": 3, "prompts_per_step": 8, "seed": 1, "beta": 0.5,
       "win_rate_max_new_tokens": 24}


def test_a_dpo_policy_beats_its_start_by_the_reward_models_judgement(tmp_path, tiny_model_dir, rows,
                                                                      marker_reward_model):
    out = run_training(RunSpec(kind="dpo", base_path=str(tiny_model_dir), config=DPO, output_dir=str(tmp_path / "m"),
                               checkpoint_dir=str(tmp_path / "c"), reward_model_path=str(marker_reward_model)),
                       lambda: iter(rows))
    result = out.win_rate
    assert result["prompts"] == 24 and result["wins"] + result["ties"] + result["losses"] == 24  # held-out prompts
    low, high = result["win_rate_ci"]
    assert low > 0.5 and low <= result["win_rate"] <= high, result  # measured: 0.79 [0.63, 0.96]
    assert result["reward_policy"] > result["reward_reference"]
    assert result["kl"] > 0  # it moved away from its start to get there
    assert "bootstrap over prompts" in result["ci_method"]
    assert out.metrics["win_rate/win_rate"] == result["win_rate"] and out.metrics["win_rate/kl"] == result["kl"]
    gained = result["examples"][0]
    assert gained["reward_policy"] > gained["reward_reference"] and MARKER.split()[-1] in gained["policy"]


def test_a_policy_against_itself_ties_every_prompt_at_zero_kl(tiny_model_dir, rows, marker_reward_model):
    tokenizer = load_tokenizer(tiny_model_dir)
    policy = load_causal_lm_for_training(tiny_model_dir)
    reward_model, reward_tokenizer = load_reward_model_for_scoring(marker_reward_model)
    prompts = policy_prompts(rows, tokenizer, limit=10, max_prompt_tokens=256, seed=3)
    assert len(prompts) == 10 and all(p.prompt_id % 5 == 1 for p in prompts)  # validation prompts only
    result = policy_win_rate(policy, policy, tokenizer, reward_model, reward_tokenizer, prompts, max_new_tokens=16)
    assert result["ties"] == 10 and result["win_rate"] == 0.5
    assert result["kl"] == pytest.approx(0.0, abs=1e-5)


def test_a_ppo_run_with_lora_trains_an_adapter_against_the_base_with_it_switched_off(tmp_path, tiny_model_dir, rows,
                                                                                     marker_reward_model):
    config = {"lora": True, "learning_rate": 1e-3, "rollout_prompts": 16, "minibatch_prompts": 8,
              "max_new_tokens": 12, "max_steps": 8, "win_rate_max_new_tokens": 12, "kl_bound": 100.0, "seed": 1}
    logged = []
    out = run_training(RunSpec(kind="ppo", base_path=str(tiny_model_dir), config=config, output_dir=str(tmp_path / "m"),
                               checkpoint_dir=str(tmp_path / "c"), reward_model_path=str(marker_reward_model)),
                       lambda: iter(rows), hooks=Hooks(log=logged.append))
    assert out.adapter and (out.output_dir / "adapter_config.json").exists()
    assert not any(p.name == "model.safetensors" for p in out.output_dir.iterdir())  # the adapter only
    rollouts = [r for r in logged if "kl" in r]
    assert len(rollouts) == 2 and rollouts[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # adapter starts as a no-op
    assert rollouts[1]["kl"] > 0  # the reference is the base without the adapter, not the trained policy
    assert out.win_rate["prompts"] == 24


def test_a_ppo_run_needs_a_reward_model(tmp_path, tiny_model_dir, rows):
    from training.ml.run import TrainingDataError

    with pytest.raises(TrainingDataError, match="needs a reward model"):
        run_training(RunSpec(kind="ppo", base_path=str(tiny_model_dir), config={}, output_dir=str(tmp_path / "m"),
                             checkpoint_dir=str(tmp_path / "c")), lambda: iter(rows))
