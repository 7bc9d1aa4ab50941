"""Best-of-n's data: the starting model answers each training prompt n times (the generation
jobs' sampler), the reward model scores every answer, and the best answer of each prompt becomes
a supervised example (training.ml.sft trains on them). The samples are kept beside the
checkpoints, so a resumed run trains on the very same answers without sampling again.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from training.ml.config import BestOfNConfig
from training.ml.data import SFTExample
from training.ml.sampling import derive_seed
from training.ml.winrate import PolicyPrompt, sample_answers

SAMPLES_FILE = "best_of_n_samples.pt"


@dataclass(frozen=True)
class Candidate:
    token_ids: tuple[int, ...]
    text: str
    score: float


def _fingerprint(prompts: Sequence[PolicyPrompt], config: BestOfNConfig) -> str:
    digest = hashlib.sha256(repr((config.seed, config.n, config.max_new_tokens, config.temperature, config.top_p,
                                  [p.input_ids for p in prompts])).encode())
    return digest.hexdigest()


def sample_candidates(model, tokenizer, prompts: Sequence[PolicyPrompt], config: BestOfNConfig, *,
                      score: Callable[[Sequence[PolicyPrompt], Sequence[str]], Sequence[float]],
                      cache: Path | None = None,
                      heartbeat: Callable[[], None] | None = None) -> list[list[Candidate]]:
    """n scored answers per prompt (read back from `cache` when it holds them for exactly these
    prompts and settings)."""
    fingerprint = _fingerprint(prompts, config)
    if cache is not None and cache.exists():
        saved = torch.load(cache, weights_only=False)
        if saved.get("fingerprint") == fingerprint:
            return saved["candidates"]
    beat = (lambda _n: heartbeat()) if heartbeat else None
    rounds = []
    for k in range(config.n):  # one batched pass over every prompt per answer slot
        sampled = sample_answers(model, tokenizer, prompts, seed=derive_seed(config.seed, "best_of_n", k),
                                 max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                 top_p=config.top_p, on_step=beat)
        scores = score(prompts, [text for _, text, _ in sampled])
        rounds.append([Candidate(tuple(ids), text, float(s)) for (ids, text, _), s in zip(sampled, scores)])
    candidates = [[r[i] for r in rounds] for i in range(len(prompts))]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"fingerprint": fingerprint, "candidates": candidates}, tmp)
        tmp.replace(cache)
    return candidates


def best_examples(prompts: Sequence[PolicyPrompt], candidates: Sequence[Sequence[Candidate]]) -> list[SFTExample]:
    """Each prompt's best-scored answer (the first on a tie) as a supervised example; answers
    with no token are skipped."""
    examples = []
    for prompt, options in zip(prompts, candidates):
        best = max(options, key=lambda c: c.score)
        if best.token_ids:
            examples.append(SFTExample(input_ids=tuple(prompt.input_ids) + best.token_ids,
                                       answer_start=len(prompt.input_ids), prompt_id=prompt.prompt_id))
    return examples


def summary(prompts: Sequence[PolicyPrompt], candidates: Sequence[Sequence[Candidate]], *, kept_shown: int) -> dict:
    """What the run page shows: mean best and mean score, and each prompt's kept answer."""
    best = [max(options, key=lambda c: c.score) for options in candidates]
    every = [c.score for options in candidates for c in options]
    n = max(len(best), 1)
    return {
        "prompts": len(prompts), "n": len(candidates[0]) if candidates else 0,
        "mean_best_score": round(sum(b.score for b in best) / n, 6),
        "mean_score": round(sum(every) / max(len(every), 1), 6),
        "kept": [{"prompt_id": p.prompt_id, "answer": b.text[:1000], "score": round(b.score, 4),
                  "scores": [round(c.score, 4) for c in options]}
                 for p, b, options in list(zip(prompts, best, candidates))[:kept_shown]],
    }
