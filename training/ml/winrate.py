"""The evaluation that matters for a trained policy (DPO now; PPO and best-of-n next): on held-out
prompts, does the reward model prefer its answers to those of the model it started from, and
what did that cost in KL?

    policy_prompts(rows, tokenizer, ...)   the validation split's prompts, as token ids
    policy_win_rate(policy, reference, reward_model, prompts, ...)
        1. sample one answer per prompt from the policy and one from the reference, each prompt
           with the same seed on both sides (training.ml.sampling, the generation jobs' sampler)
        2. score every answer with the reward model (prompt + answer, its own tokenizer)
        3. win = 1 when the policy's answer scores higher, 0.5 on a tie, 0 else; the win rate
           with a 95% percentile-bootstrap interval over prompts (training.ml.evaluation)
        4. KL(policy || reference), estimated per prompt as log pi(y|x) - log pi_ref(y|x) of the
           policy's own answer y, averaged: an unbiased estimate when y is sampled from the
           policy at temperature 1 and top-p 1 (the default here), in nats per answer

Pure torch + transformers; no Django.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from training.ml.data import cap_response, fit_prompt, seeded_subset, split_chats
from training.ml.evaluation import accuracy_with_interval
from training.ml.models import answer_logprobs
from training.ml.prompting import encode_response
from training.ml.sampling import GenerationConfig, SampleRequest, derive_seed, generate


@dataclass(frozen=True)
class PolicyPrompt:
    prompt_id: int
    chat: tuple  # the rendered chat (role/content dicts), for the reward model's own tokenizer
    input_ids: tuple[int, ...]  # the policy's prompt tokens


def policy_prompts(rows: Iterable[dict], tokenizer, *, split: str = "validation", limit: int | None,
                   max_prompt_tokens: int, seed: int = 0) -> list[PolicyPrompt]:
    """The prompts of `split` a policy answers (up to `limit`: a sample seeded by `seed` when
    there are more), each cut from the left to `max_prompt_tokens`."""
    prompts = []
    for row, chat in split_chats(rows, split):
        ids, _ = fit_prompt(tokenizer, chat, max_prompt_tokens)
        prompts.append(PolicyPrompt(prompt_id=row["prompt_id"], chat=tuple(chat), input_ids=tuple(ids)))
    return seeded_subset(prompts, limit, seed=seed)


def sample_answers(model, tokenizer, prompts: Sequence[PolicyPrompt], *, seed: int, max_new_tokens: int,
                   temperature: float = 1.0, top_p: float = 1.0,
                   on_step: Callable[[int], None] | None = None) -> list[tuple[list[int], str, bool]]:
    """One answer per prompt, sampled with the generation jobs' sampler, each prompt's row seeded
    by (seed, prompt id): (token ids, with the stop token the model sampled when it stopped, so
    that its log-probability is that of what was sampled; text; whether it stopped rather than
    ran out of tokens)."""
    requests = [SampleRequest(key=p.prompt_id, input_ids=p.input_ids, temperature=temperature, top_p=top_p,
                              seed=derive_seed(seed, p.prompt_id), max_new_tokens=max_new_tokens) for p in prompts]
    device = next(model.parameters()).device
    model.eval()

    def step(tokens: int) -> bool:
        if on_step is not None:
            on_step(tokens)
        return False  # never aborts: a cancel raises from the heartbeat

    with torch.no_grad():
        results = generate(model, tokenizer, requests, config=GenerationConfig.for_device(device), on_step=step)
    return [(list(r.token_ids) + ([r.stop_token_id] if r.stop_token_id is not None else []), r.text,
             r.finish_reason == "stop") for r in results]


@torch.no_grad()
def reward_scores(reward_model, reward_tokenizer, prompts: Sequence[PolicyPrompt], texts: Sequence[str], *,
                  max_length: int, max_response_tokens: int) -> list[float]:
    """The reward model's raw score of each (prompt, answer text), read with its own tokenizer:
    the answer kept whole up to `max_response_tokens`, the prompt cut from the left to fit."""
    from training.ml.reward import score_pairs

    items = []
    for prompt, text in zip(prompts, texts):
        answer, _ = cap_response(encode_response(reward_tokenizer, text), max_response_tokens)
        ids, _ = fit_prompt(reward_tokenizer, list(prompt.chat), max_length - len(answer))
        items.append((ids, answer))
    device = next(reward_model.parameters()).device
    return score_pairs(reward_model, items, pad_id=reward_tokenizer.pad_token_id, device=device)


@torch.no_grad()
def _logprobs(model, prompts: Sequence[PolicyPrompt], answers: Sequence[list[int]], *, pad_id: int) -> list[float]:
    out = []
    for prompt, answer in zip(prompts, answers):  # one at a time: answers differ in length a lot
        if not answer:
            out.append(0.0)
            continue
        logps, _ = answer_logprobs(model, [prompt.input_ids], [[answer]], pad_id=pad_id)
        out.append(float(logps[0]))
    return out


def policy_win_rate(policy, reference, tokenizer, reward_model, reward_tokenizer, prompts: Sequence[PolicyPrompt], *,
                    seed: int = 0, max_new_tokens: int = 128, temperature: float = 1.0, top_p: float = 1.0,
                    reward_max_length: int = 512, reward_max_response_tokens: int = 256,
                    heartbeat: Callable[[], None] | None = None) -> dict:
    """The reward model's win rate of `policy` over `reference` on `prompts`, with its interval,
    and the KL it cost (see the module's docstring). Returns {"win_rate", "win_rate_ci",
    "ci_method", "prompts", "wins", "ties", "losses", "reward_policy", "reward_reference", "kl",
    "length_policy", "length_reference", "examples"}."""
    beat = (lambda _n: heartbeat()) if heartbeat else None
    pad_id = tokenizer.pad_token_id
    mine = sample_answers(policy, tokenizer, prompts, seed=seed, max_new_tokens=max_new_tokens, temperature=temperature,
                   top_p=top_p, on_step=beat)
    theirs = sample_answers(reference, tokenizer, prompts, seed=seed, max_new_tokens=max_new_tokens,
                     temperature=temperature, top_p=top_p, on_step=beat)
    score = lambda answers: reward_scores(reward_model, reward_tokenizer, prompts, [a[1] for a in answers],  # noqa: E731
                                    max_length=reward_max_length, max_response_tokens=reward_max_response_tokens)
    policy_scores, reference_scores = score(mine), score(theirs)
    if heartbeat:
        heartbeat()
    kl = [a - b for a, b in zip(_logprobs(policy, prompts, [a[0] for a in mine], pad_id=pad_id),
                                _logprobs(reference, prompts, [a[0] for a in mine], pad_id=pad_id))]
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(policy_scores, reference_scores)]
    interval = accuracy_with_interval([(w, 1) for w in wins], seed=seed)
    n = max(len(prompts), 1)
    order = sorted(range(len(prompts)), key=lambda i: policy_scores[i] - reference_scores[i], reverse=True)
    shown = sorted(set(order[:2] + order[-2:]), key=order.index)  # the two largest gains and losses
    return {
        "win_rate": interval["accuracy"], "win_rate_ci": interval["accuracy_ci"], "ci_method": interval["ci_method"],
        "prompts": len(prompts), "wins": wins.count(1.0), "ties": wins.count(0.5), "losses": wins.count(0.0),
        "reward_policy": round(sum(policy_scores) / n, 6), "reward_reference": round(sum(reference_scores) / n, 6),
        "kl": round(sum(kl) / n, 6),
        "length_policy": round(sum(len(a[0]) for a in mine) / n, 2),
        "length_reference": round(sum(len(a[0]) for a in theirs) / n, 2),
        "sampling": {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed},
        # The answers where the policy gained most and lost most against the reference.
        "examples": [{"prompt_id": prompts[i].prompt_id, "policy": mine[i][1], "reference": theirs[i][1],
                      "reward_policy": round(policy_scores[i], 4), "reward_reference": round(reference_scores[i], 4)}
                     for i in shown],
    }
