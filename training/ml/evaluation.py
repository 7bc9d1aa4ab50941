"""Accuracy with an honest interval.

Pairs of one prompt are not independent (they share the prompt and its answers), so a binomial
interval over pairs would be too narrow. The 95% interval is a percentile bootstrap over prompts:
prompts are drawn with replacement and the pairwise accuracy recomputed, so a prompt's pairs
move together. With fewer than MIN_BOOTSTRAP_PROMPTS prompts it falls back to the Wilson score
interval over pairs, and says so.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MIN_BOOTSTRAP_PROMPTS = 5
BOOTSTRAP_SAMPLES = 2000


def wilson_interval(correct: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion correct/n (Wilson 1927)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_with_interval(per_prompt: Sequence[tuple[float, int]], *, seed: int = 0) -> dict:
    """Pairwise accuracy of (correct pairs, pairs) per prompt, with its 95% interval.

    Returns {"accuracy", "accuracy_ci": [low, high], "ci_method", "pairs", "prompts"}; accuracy
    is None when there is no pair.
    """
    rows = [(c, n) for c, n in per_prompt if n > 0]
    pairs = sum(n for _, n in rows)
    if not pairs:
        return {"accuracy": None, "accuracy_ci": None, "ci_method": None, "pairs": 0, "prompts": 0}
    correct = np.array([c for c, _ in rows], dtype=np.float64)
    counts = np.array([n for _, n in rows], dtype=np.float64)
    accuracy = float(correct.sum() / counts.sum())
    if len(rows) >= MIN_BOOTSTRAP_PROMPTS:
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(rows), size=(BOOTSTRAP_SAMPLES, len(rows)))
        resampled = correct[draws].sum(axis=1) / counts[draws].sum(axis=1)
        low, high = np.percentile(resampled, [2.5, 97.5])
        interval, method = (float(low), float(high)), "bootstrap over prompts (2000 resamples)"
    else:
        interval, method = wilson_interval(float(correct.sum()), int(counts.sum())), "Wilson over pairs"
    return {"accuracy": round(accuracy, 6), "accuracy_ci": [round(interval[0], 6), round(interval[1], 6)],
            "ci_method": method, "pairs": int(counts.sum()), "prompts": len(rows)}
