"""Reward scores: one prompt encoding for K answers gives the scores (and gradients) of K whole
sequences; the reward model's padding never hides the token its score is read at."""
from __future__ import annotations

import pytest
import torch

from training.ml import models as M


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir):
    tokenizer = M.load_tokenizer(tiny_model_dir)
    M.reward_pad_token(tokenizer)
    model = M.load_reward_model_for_training(tiny_model_dir, tokenizer=tokenizer, seed=1)
    torch.nn.init.normal_(M.reward_head(model).weight, std=1.0)  # scores far from 0: differences show
    return model, tokenizer


PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
ANSWERS = [[[20, 21, 3], [22, 3], [23, 24, 25, 3]], [[30, 3], [31, 32, 33, 34, 35, 3]]]


def test_shared_prefix_scores_equal_whole_sequence_scores(reward_model):
    model, tokenizer = reward_model
    whole = M.score_groups(model, PROMPTS, ANSWERS, pad_id=tokenizer.pad_token_id, shared_prefix=False)
    shared = M.score_groups(model, PROMPTS, ANSWERS, pad_id=tokenizer.pad_token_id, shared_prefix=True)
    assert whole.shape == (5,)
    assert torch.allclose(whole, shared, atol=1e-5)
    alone = M.score_sequences(model, [PROMPTS[1] + ANSWERS[1][1]], pad_id=tokenizer.pad_token_id)
    assert torch.allclose(alone, whole[4:5], atol=1e-5)  # padding in a batch changes nothing


def test_shared_prefix_trains_what_whole_sequences_train(reward_model):
    model, tokenizer = reward_model
    grads = []
    for shared in (False, True):
        model.zero_grad()
        scores = M.score_groups(model, PROMPTS, ANSWERS, pad_id=tokenizer.pad_token_id, shared_prefix=shared)
        (scores * torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-4), name
    embed = "model.embed_tokens.weight"
    assert grads[1][embed][5].abs().sum() > 0  # the prompt's tokens get gradient through the cache


def test_reward_tokenizer_pads_with_a_token_other_than_the_end_of_turn(tiny_model_dir):
    from training.ml.prompting import end_of_turn_id

    tokenizer = M.load_tokenizer(tiny_model_dir)
    tokenizer.pad_token = tokenizer.eos_token  # as SmolLM2 ships
    M.reward_pad_token(tokenizer)
    assert tokenizer.pad_token_id != end_of_turn_id(tokenizer)


def test_precision_auto_is_fp32_on_a_cpu():
    assert M.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert M.resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_train_layers_auto_trains_the_top_12_on_a_cpu_and_everything_on_a_gpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert M.resolve_train_layers("auto", device=cpu, adapter=False) == 12
    assert M.resolve_train_layers("auto", device=gpu, adapter=False) is None
    assert M.resolve_train_layers("auto", device=cpu, adapter=True) is None  # an adapter trains a little of every layer
    assert M.resolve_train_layers(4, device=gpu, adapter=False) == 4
    assert M.resolve_train_layers(None, device=cpu, adapter=False) is None


@pytest.fixture(scope="module")
def language_model(tiny_model_dir):
    return M.load_causal_lm_for_training(tiny_model_dir), M.load_tokenizer(tiny_model_dir)


def test_answer_logprobs_are_the_models_own_next_token_log_probabilities(language_model):
    model, tokenizer = language_model
    logps, counts = M.answer_logprobs(model, PROMPTS, ANSWERS, pad_id=tokenizer.pad_token_id, shared_prefix=False)
    assert counts.tolist() == [3, 2, 4, 2, 6]
    # By hand for prompt 1's second answer: the full forward's log-softmax at each position
    # before an answer token, at that token.
    sequence = PROMPTS[1] + ANSWERS[1][1]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([sequence])).logits[0].float(), dim=-1)
    start = len(PROMPTS[1])
    expected = sum(log_probs[start + t - 1, token].item() for t, token in enumerate(ANSWERS[1][1]))
    assert logps[4].item() == pytest.approx(expected, abs=1e-4)


def test_answer_logprobs_of_a_shared_prompt_equal_those_of_whole_sequences(language_model):
    model, tokenizer = language_model
    grads = []
    values = []
    for shared in (False, True):
        model.zero_grad()
        logps, _ = M.answer_logprobs(model, PROMPTS, ANSWERS, pad_id=tokenizer.pad_token_id, shared_prefix=shared)
        values.append(logps.detach())
        (logps * torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert torch.allclose(values[0], values[1], atol=1e-4)
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-4), name
