"""Pairs from a ranking: pure functions over tie groups of candidate ids, shared by the exports
(training.exports) and the trainers (training.ml), which must not import Django."""
from __future__ import annotations

from collections.abc import Iterator


def ranking_pairs(groups: list[list[int]], *, ties: bool = False) -> Iterator[tuple[int, int, bool]]:
    """(chosen, rejected, tie) for every pair of candidates in a ranking of tie groups
    best→worst: all K·(K−1)/2 pairs, tied pairs skipped unless `ties` (then yielded once, in
    id order, with tie True). Groups in order, ids within a group sorted: deterministic."""
    ordered = [sorted(g) for g in groups]
    for i, better in enumerate(ordered):
        if ties:
            for a_index, a in enumerate(better):
                for b in better[a_index + 1:]:
                    yield a, b, True
        for worse in ordered[i + 1:]:
            for a in better:
                for b in worse:
                    yield a, b, False


def numeric_ratings(ratings: list[dict]) -> list[dict[int, float]]:
    """Ratings keyed by candidate id as int, numbers only: what pair_margin reads."""
    return [{int(k): v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for r in ratings]


def pair_margin(ratings: list[dict[int, float]], chosen: int, rejected: int) -> float | None:
    """rating_margin on numeric_ratings: computed on ratings keyed by int once per ranking
    rather than once per pair."""
    diffs = [r[chosen] - r[rejected] for r in ratings if chosen in r and rejected in r]
    return round(sum(diffs) / len(diffs), 6) if diffs else None
