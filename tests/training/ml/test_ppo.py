"""PPO optimises, not just runs: on the tiny random policy with a rule reward (+1 for each time an
answer writes a chosen token), the mean reward rises over a few dozen steps while the adaptive
controller holds the KL to the starting model under its bound; a KL past the bound stops the run
with a message; a run killed mid-rollout resumes on the same answers and ends where an
uninterrupted run ends."""
from __future__ import annotations

import copy

import pytest
import torch

from training.ml import checkpoints as ckpt
from training.ml.config import config_from_dict
from training.ml.models import load_causal_lm_for_training, load_tokenizer
from training.ml.ppo import PolicyDiverged, PPOTask, attach_value_head
from training.ml.run import _padded_logprobs
from training.ml.trainer import Hooks, train
from training.ml.winrate import policy_prompts

from tests.training.ml.conftest import marker_rows

pytestmark = pytest.mark.slow

# 96 train prompts, rollouts of 16 answered in 2 mini-batches twice: 24 steps (6 rollouts) an epoch.
CONFIG = {"learning_rate": 3e-4, "rollout_prompts": 16, "minibatch_prompts": 8, "ppo_epochs": 2,
          "max_new_tokens": 16, "kl_coef": 0.02, "adaptive_kl": True, "kl_target": 6.0, "kl_horizon": 16,
          "kl_bound": 20.0, "seed": 1, "train_layers": None, "warmup_ratio": 0.0, "lr_schedule": "constant",
          "checkpoint_every": 1000}
REWARDED = " the"


class Stop(Exception):
    pass


def ppo_setup(tiny_model_dir, overrides: dict):
    """(model, task, config): the tiny policy with a value head, and a PPO task whose reward
    counts REWARDED's token in each answer."""
    tokenizer = load_tokenizer(tiny_model_dir)
    target = tokenizer(REWARDED, add_special_tokens=False)["input_ids"][-1]
    config = config_from_dict("ppo", {**CONFIG, **overrides})
    torch.manual_seed(config.seed)
    model = load_causal_lm_for_training(tiny_model_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    reference = copy.deepcopy(model).eval()
    rows = marker_rows()

    def reward_fn(prompts, texts):
        return [float(tokenizer(t, add_special_tokens=False)["input_ids"].count(target)) for t in texts]

    task = PPOTask(train=policy_prompts(rows, tokenizer, split="train", limit=None, max_prompt_tokens=64),
                   validation=policy_prompts(rows, tokenizer, split="validation", limit=8, max_prompt_tokens=64),
                   config=config, tokenizer=tokenizer, pad_id=tokenizer.pad_token_id, device=torch.device("cpu"),
                   reward_fn=reward_fn,
                   reference_fn=lambda p, a: _padded_logprobs(reference, p, a, tokenizer.pad_token_id))
    attach_value_head(model, seed=config.seed)
    return model, task, config


def rollouts(logged: list[dict]) -> list[dict]:
    return [r for r in logged if "reward" in r]


def test_ppo_raises_the_reward_while_the_controller_bounds_the_kl(tmp_path, tiny_model_dir):
    model, task, config = ppo_setup(tiny_model_dir, {"epochs": 3})
    logged, evaluated = [], []
    result = train(model=model, task=task, config=config, checkpoint_dir=tmp_path,
                   hooks=Hooks(log=logged.append, evaluate=evaluated.append))
    assert result.steps == 72
    seen = rollouts(logged)
    assert [r["step"] for r in seen] == list(range(1, 73, 4))  # a rollout every 4 steps
    rewards = [r["reward"] for r in seen]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last >= first + 0.75, rewards  # measured: 0.08 -> 1.48
    kls = [r["kl"] for r in seen]
    assert kls[0] == pytest.approx(0.0, abs=1e-5)  # the first answers are the starting model's own
    assert max(kls) <= config.kl_bound
    coefs = [r["kl_coef"] for r in seen]
    below = [i for i in range(1, len(seen)) if kls[i - 1] < config.kl_target]
    above = [i for i in range(1, len(seen)) if kls[i - 1] > config.kl_target]
    assert below and above
    assert all(coefs[i] < coefs[i - 1] for i in below) and all(coefs[i] > coefs[i - 1] for i in above)
    assert all(len(r["samples"]) == 3 and "answer" in r["samples"][0] for r in seen)
    for name in ("policy_loss", "value_loss", "clip_fraction", "approx_kl", "entropy", "response_length"):
        assert name in seen[-1], name
    assert [e["step"] for e in evaluated] == [24, 48, 72]
    assert evaluated[-1]["validation/reward"] > evaluated[0]["validation/reward"] - 1e-9
    assert evaluated[-1]["validation/kl"] > 0


def test_a_kl_past_the_bound_stops_the_run_with_what_to_do(tmp_path, tiny_model_dir):
    model, task, config = ppo_setup(tiny_model_dir, {"kl_bound": 0.5, "learning_rate": 1e-3, "epochs": 2})
    with pytest.raises(PolicyDiverged, match="past kl_bound .0.5.*lower learning_rate or a higher kl_coef"):
        train(model=model, task=task, config=config, checkpoint_dir=tmp_path)


def test_a_ppo_run_killed_mid_rollout_resumes_on_the_same_answers(tmp_path, tiny_model_dir):
    overrides = {"epochs": 1, "checkpoint_every": 6, "learning_rate": 1e-3}
    model, task, config = ppo_setup(tiny_model_dir, overrides)
    whole_logged = []
    train(model=model, task=task, config=config, checkpoint_dir=tmp_path / "whole",
          hooks=Hooks(log=whole_logged.append))
    whole_weights = {k: v.clone() for k, v in model.state_dict().items()}

    def die_at_step_9(record):
        if record["step"] == 9:
            raise Stop()  # after checkpoint 6, in the middle of the second rollout (steps 5-8) ... and the third

    model, task, config = ppo_setup(tiny_model_dir, overrides)
    with pytest.raises(Stop):
        train(model=model, task=task, config=config, checkpoint_dir=tmp_path / "killed", hooks=Hooks(log=die_at_step_9))
    saved = ckpt.latest_checkpoint(tmp_path / "killed")
    assert saved.step == 6 and (saved.path / "task" / "ppo.pt").exists()

    model, task, config = ppo_setup(tiny_model_dir, overrides)  # a fresh process: nothing in memory
    logged = []
    result = train(model=model, task=task, config=config, checkpoint_dir=tmp_path / "killed", hooks=Hooks(log=logged.append))
    assert result.resumed_from == 6 and logged[0]["step"] == 7
    assert "reward" not in logged[0]  # steps 7-8 train on rollout 2's saved answers, not new ones
    by_step = {r["step"]: r for r in whole_logged}
    for record in logged:
        expected = by_step[record["step"]]
        for key in ("loss", "reward", "kl", "kl_coef"):
            if key in expected:
                assert record[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (record["step"], key)
    state = model.state_dict()
    assert max((state[k] - whole_weights[k]).abs().max().item() for k in state) < 1e-5


def test_a_rollout_far_from_the_first_rollouts_length_raises_the_drift_alarm(tiny_model_dir):
    model, task, config = ppo_setup(tiny_model_dir, {"length_drift_alarm": 2.0})
    first = task.roll_out(model, (0, 0), list(range(8)))
    assert "alarm" not in first.metrics and first.metrics["length_drift_sum"] == 1.0
    task.first_length = 4 * task.first_length  # as if the answers had shrunk to a quarter since
    later = task.roll_out(model, (0, 1), list(range(8, 16)))
    assert later.metrics["length_drift_sum"] == pytest.approx(0.25, rel=0.2)
    assert "answer length drifted to" in later.metrics["alarm"] and "rewarding length" in later.metrics["alarm"]


def test_a_score_every_answer_gets_teaches_nothing(tiny_model_dir):
    """A reward model's scores are not centred: part of every score is a constant that says
    nothing about the answer. The value head starts at 0 and learns at the policy's learning
    rate, far too slowly to absorb it, so uncentred it landed on each answer's last token and
    whitening made every answer's end look better than its start (a default PPO run halved its
    answers' length while its reward fell). Centred on the rollout's mean, a constant score
    leaves every advantage at 0."""
    from training.ml.ppo_losses import last_positions

    def constant_rollout(overrides):
        model, task, _ = ppo_setup(tiny_model_dir, {"kl_coef": 0.0, "adaptive_kl": False, **overrides})
        task.reward_fn = lambda prompts, texts: [5.0] * len(texts)
        return task.roll_out(model, (0, 0), list(range(8)))

    centred = constant_rollout({})
    assert centred.advantages.abs().max() < 1e-6
    assert centred.metrics["reward_sum"] == pytest.approx(5.0 * 8)  # the logged reward is the score itself

    uncentred = constant_rollout({"center_scores": False})
    rows = torch.arange(uncentred.mask.shape[0])
    ends = uncentred.advantages[rows, last_positions(uncentred.mask)]
    starts = uncentred.advantages[:, 0]
    long_answers = uncentred.mask.sum(dim=1) > 4
    assert long_answers.any()
    assert (ends[long_answers] > starts[long_answers] + 0.5).all()  # the ending "earns" the constant
