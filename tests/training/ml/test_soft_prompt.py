"""Soft prompts (peft prompt tuning): our forward passes and sampling put the soft prompt where
peft's own forward and generate put it; an SFT, reward, DPO and PPO run trains the prompt alone
and learns; the adapter is saved, loaded and sampled from like any model; and a run that cannot
start from an adapter says why."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from modelhub.loading import load_causal_lm
from training.ml.models import (answer_logprobs, causal_lm_logits, load_causal_lm_for_training,
                                score_groups)
from training.ml.run import RunSpec, TrainingDataError, run_training
from training.ml.sampling import SampleRequest, sample_batch
from training.ml.soft_prompt import (adapter_start_problem, adapter_type, add_soft_prompt, soft_prompt_length,
                                     with_soft_prompt)
from training.ml.trainer import Hooks

from tests.training.ml.conftest import marker_rows

SOFT = {"soft_prompt": True, "soft_prompt_tokens": 4, "seed": 1, "checkpoint_every": 50}


def soft_lm(tiny_model_dir, tokenizer, *, init_text=""):
    torch.manual_seed(0)
    model = add_soft_prompt(load_causal_lm_for_training(tiny_model_dir), tokens=4, init_text=init_text,
                            tokenizer=tokenizer, task="sft", seed=3)
    return model.eval()


def test_the_soft_prompt_is_written_as_virtual_tokens_in_front(tiny_model_dir, tokenizer):
    model = soft_lm(tiny_model_dir, tokenizer)
    assert soft_prompt_length(model) == 4
    assert with_soft_prompt(model, [[5, 6]]) == [(-1, -2, -3, -4, 5, 6)]
    assert with_soft_prompt(load_causal_lm_for_training(tiny_model_dir), [[5, 6]]) == [(5, 6)]
    # Initialised from a text: the prompt's vectors are that text's word embeddings, repeated.
    for text in ("hello world", "hi"):  # longer than the prompt: cut; shorter: repeated
        texted = soft_lm(tiny_model_dir, tokenizer, init_text=text)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        expected = (ids * 4)[:4]
        words = texted.get_base_model().get_input_embeddings().weight
        assert torch.equal(texted.get_prompt(batch_size=1)[0], words[expected])


def test_log_probabilities_and_logits_match_pefts_own_forward(tiny_model_dir, tokenizer):
    model = soft_lm(tiny_model_dir, tokenizer)
    prompts = [[11, 12, 13, 14, 15], [21, 22]]
    answers = [[[31, 32, 33], [34]], [[41, 42, 43, 44]]]
    expected = []
    with torch.no_grad():
        for prompt, group in zip(prompts, answers):
            for answer in group:
                logits = model(input_ids=torch.tensor([prompt + answer])).logits[0]  # peft: N + P + R positions
                logp = torch.log_softmax(logits[4 + len(prompt) - 1:-1], dim=-1)
                expected.append(float(logp.gather(1, torch.tensor(answer).unsqueeze(1)).sum()))
        shared, counts = answer_logprobs(model, prompts, answers, pad_id=tokenizer.pad_token_id)
        separate, _ = answer_logprobs(model, prompts, answers, pad_id=tokenizer.pad_token_id, shared_prefix=False)
        plain, _ = answer_logprobs(model.get_base_model(), prompts, answers, pad_id=tokenizer.pad_token_id)
        ids = torch.tensor([[11, 12, 13, 0], [21, 22, 23, 24]])
        mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
        ours = causal_lm_logits(model, ids, mask)
        theirs = model(input_ids=ids, attention_mask=mask).logits[:, 4:]
    assert counts.tolist() == [3, 1, 4]
    assert shared.tolist() == pytest.approx(expected, abs=1e-4)
    assert separate.tolist() == pytest.approx(expected, abs=1e-4)
    assert plain.tolist() != pytest.approx(expected, abs=1e-2)  # the soft prompt changes them
    assert ours.shape == (2, 4, theirs.shape[-1])
    assert torch.allclose(ours[1], theirs[1], atol=1e-4) and torch.allclose(ours[0, :3], theirs[0, :3], atol=1e-4)


def test_batched_sampling_decodes_what_pefts_generate_decodes(tiny_model_dir, tokenizer):
    model = soft_lm(tiny_model_dir, tokenizer)
    prompts = [(11, 12, 13, 14, 15, 16), (21, 22), (31, 32, 33)]
    requests = [SampleRequest(key=i, input_ids=p, temperature=0, top_p=1, seed=0, max_new_tokens=8)
                for i, p in enumerate(prompts)]
    ours, _, _, _ = sample_batch(model, requests, pad_id=tokenizer.pad_token_id, stop_ids=set())
    for prompt, tokens in zip(prompts, ours):
        with torch.no_grad():
            theirs = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                                    max_new_tokens=8, min_new_tokens=8, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        assert tokens == theirs[0, -8:].tolist()
    plain, _, _, _ = sample_batch(model.get_base_model(), requests, pad_id=tokenizer.pad_token_id, stop_ids=set())
    assert plain != ours


def spec(tmp_path, kind, config, base, name="run", **extra):
    return RunSpec(kind=kind, base_path=str(base), config=config, output_dir=str(tmp_path / name / "model"),
                   checkpoint_dir=str(tmp_path / name / "checkpoints"), **extra)


def test_sft_trains_the_soft_prompt_alone_and_lowers_the_validation_loss(tmp_path, tiny_model_dir, rows, tokenizer):
    evaluated = []
    out = run_training(spec(tmp_path, "sft", {**SOFT, "learning_rate": 3e-2, "batch_size": 8}, tiny_model_dir),
                       lambda: iter(rows), hooks=Hooks(evaluate=evaluated.append))
    assert out.adapter and adapter_type(out.output_dir) == "soft_prompt"
    saved = load_file(out.output_dir / "adapter_model.safetensors")
    assert list(saved) == ["prompt_embeddings"] and saved["prompt_embeddings"].shape == (4, 32)
    # The start: the soft prompt as initialised from its text, nothing trained.
    start = add_soft_prompt(load_causal_lm_for_training(tiny_model_dir), tokens=4, init_text=SOFT_INIT,
                            tokenizer=tokenizer, task="sft", seed=1)
    start_loss = _validation_loss(start, rows, tokenizer)
    # Four vectors in front of a random model move it less than training its weights does (measured:
    # 11.18 -> 10.70 nats on the held-out answers in one epoch, flat after), but they move it.
    assert evaluated[-1]["validation/loss"] < start_loss - 0.3, (start_loss, evaluated)
    # Loaded as the model hub loads an adapter for a generation job: the same loss, and it samples.
    loaded = load_causal_lm(out.output_dir, format="peft", base_path=tiny_model_dir, device="cpu",
                            dtype=torch.float32)
    assert _validation_loss(loaded.model, rows, tokenizer) == pytest.approx(evaluated[-1]["validation/loss"], rel=1e-4)
    tokens, _, _, _ = sample_batch(loaded.model, [SampleRequest(key=0, input_ids=(11, 12), temperature=1, top_p=1,
                                                             seed=0, max_new_tokens=4)],
                                pad_id=tokenizer.pad_token_id, stop_ids=set())
    assert len(tokens[0]) == 4
    # A soft-prompt run on the soft prompt trains it further; anything else is refused, in words.
    again = run_training(spec(tmp_path, "sft", {**SOFT, "learning_rate": 3e-2, "max_steps": 2}, out.output_dir,
                              name="again", base_adapter_of=str(tiny_model_dir)), lambda: iter(rows))
    assert again.adapter and not torch.equal(load_file(again.output_dir / "adapter_model.safetensors")[
        "prompt_embeddings"], saved["prompt_embeddings"])
    with pytest.raises(TrainingDataError, match="soft prompt, which cannot be merged"):
        run_training(spec(tmp_path, "sft", {"max_steps": 1}, out.output_dir, name="full",
                          base_adapter_of=str(tiny_model_dir)), lambda: iter(rows))


SOFT_INIT = "Answer the user's request helpfully, truthfully and concisely."


def _validation_loss(model, rows, tokenizer) -> float:
    from training.ml.config import SFTConfig
    from training.ml.data import sft_examples
    from training.ml.sft import SFTTask

    validation, _ = sft_examples(rows, tokenizer, split="validation", max_length=1024, max_response_tokens=512)
    task = SFTTask(train=[], validation=validation, config=SFTConfig(), pad_id=tokenizer.pad_token_id,
                   device=torch.device("cpu"))
    with torch.no_grad():
        return task.evaluate(model.eval())["validation/loss"]


def test_a_reward_model_with_a_soft_prompt_learns_the_rule(tmp_path, tiny_model_dir):
    rows = marker_rows()
    out = run_training(spec(tmp_path, "reward", {**SOFT, "learning_rate": 3e-3, "epochs": 3, "prompts_per_step": 8},
                            tiny_model_dir), lambda: iter(rows))
    assert adapter_type(out.output_dir) == "soft_prompt"
    saved = load_file(out.output_dir / "adapter_model.safetensors")
    assert "prompt_embeddings" in saved and any("score" in k for k in saved)  # the head trains beside it
    assert out.metrics["validation/accuracy"] >= 0.75, out.metrics
    from training.ml.models import load_reward_model_for_scoring

    model, tokenizer = load_reward_model_for_scoring(out.output_dir, adapter_of=tiny_model_dir)
    with torch.no_grad():
        shared = score_groups(model, [[11, 12]], [[[5, 6], [7]]], pad_id=tokenizer.pad_token_id, shared_prefix=True)
        separate = score_groups(model, [[11, 12]], [[[5, 6], [7]]], pad_id=tokenizer.pad_token_id,
                                shared_prefix=False)
    assert torch.allclose(shared, separate, atol=1e-4)


def test_dpo_and_ppo_train_a_soft_prompt(tmp_path, tiny_model_dir, rows, marker_reward_model):
    dpo = run_training(spec(tmp_path, "dpo", {**SOFT, "learning_rate": 3e-2, "epochs": 2, "prompts_per_step": 8,
                                              "beta": 0.5, "eval_every": 1}, tiny_model_dir, name="dpo"),
                       lambda: iter(rows), hooks=Hooks(evaluate=(evaluated := []).append))
    assert dpo.adapter and evaluated[-1]["validation/loss"] < evaluated[0]["validation/loss"]
    assert evaluated[-1]["validation/accuracy"] > evaluated[0]["validation/accuracy"] - 1e-9
    logged = []
    ppo = run_training(spec(tmp_path, "ppo", {**SOFT, "learning_rate": 3e-2, "max_steps": 4, "rollout_prompts": 4,
                                              "minibatch_prompts": 4, "max_new_tokens": 8, "kl_bound": 100.0,
                                              "win_rate_prompts": 0}, tiny_model_dir, name="ppo",
                            reward_model_path=str(marker_reward_model)),
                       lambda: iter(rows), hooks=Hooks(log=logged.append))
    assert ppo.adapter and adapter_type(ppo.output_dir) == "soft_prompt"
    rollouts = [r for r in logged if "kl" in r]
    # The reference is the policy as it started (the soft prompt as initialised): no KL at first,
    # and some once the prompt has moved.
    assert len(rollouts) == 2 and rollouts[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert rollouts[1]["kl"] > 1e-4


@pytest.mark.parametrize("kind, lora, soft, start, refused", [
    ("sft", False, True, "", False),
    ("sft", False, True, "soft_prompt", False),
    ("ppo", False, False, "soft_prompt", True),
    ("dpo", True, False, "soft_prompt", True),
    ("reward", False, True, "soft_prompt", True),
    ("sft", False, True, "lora", True),
    ("reward", True, False, "lora", True),
    ("reward", False, False, "lora", False),
    ("ppo", True, False, "lora", False),
])
def test_which_runs_can_start_from_an_adapter(kind, lora, soft, start, refused):
    problem = adapter_start_problem(kind=kind, lora=lora, soft_prompt=soft, start=start)
    assert (problem is not None) == refused, problem


def test_adapter_type_reads_the_adapter_config(tmp_path):
    assert adapter_type(tmp_path) == ""
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING"}))
    assert adapter_type(tmp_path) == "soft_prompt"
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    assert adapter_type(tmp_path) == "lora"
    (tmp_path / "adapter_config.json").write_text("{not json")
    assert adapter_type(tmp_path) == ""
