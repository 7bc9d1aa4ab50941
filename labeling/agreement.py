"""Agreement between rankings, and a consensus ranking: pure functions, no Django.

A ranking is a list of tie groups best→worst, e.g. [[3], [1, 4], [2]]: 3 best, 1 and 4 tied,
2 worst. Candidate ids are any hashable values that sort among themselves (ints in the app).
Two annotators may have been shown different subsets of a prompt's candidates, so every
comparison is made over the candidates both rankings contain.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from functools import lru_cache
from itertools import combinations

import krippendorff  # pinned in requirements: krippendorff==0.9.0
import numpy as np

Ranking = Sequence[Sequence[Hashable]]


def ranking_positions(ranking: Ranking) -> dict[Hashable, int]:
    """Each candidate's tie-group index: 0 for the best group, 1 for the next, …"""
    return {candidate: index for index, group in enumerate(ranking) for candidate in group}


def ranking_mid_ranks(ranking: Ranking) -> dict[Hashable, float]:
    """Each candidate's rank from 1 (best), tied candidates sharing the mean of the ranks they
    occupy ([[a], [b, c]] → a 1, b 2.5, c 2.5), as in Spearman's and Kendall's treatment of ties."""
    ranks: dict[Hashable, float] = {}
    start = 1
    for group in ranking:
        mid = start + (len(group) - 1) / 2
        for candidate in group:
            ranks[candidate] = mid
        start += len(group)
    return ranks


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def pairwise_preferences(ranking: Ranking) -> dict[tuple, int]:
    """{(a, b): s} for every pair with a < b: s = +1 if a is ranked above b, -1 below, 0 tied."""
    pos = ranking_positions(ranking)
    return {(a, b): _sign(pos[b] - pos[a]) for a, b in combinations(sorted(pos), 2)}


def _shared_pairs(first: Ranking, second: Ranking) -> list[tuple[int, int]]:
    """(s1, s2) preference signs of each pair of candidates both rankings contain."""
    p1, p2 = ranking_positions(first), ranking_positions(second)
    shared = sorted(set(p1) & set(p2))
    return [(_sign(p1[b] - p1[a]), _sign(p2[b] - p2[a])) for a, b in combinations(shared, 2)]


def pairwise_agreement(first: Ranking, second: Ranking) -> float | None:
    """Share of shared candidate pairs on which both rankings give the same verdict (a above b,
    b above a, or tied). None when they share fewer than two candidates. Computed on position
    rows, as consensus_with_agreement does for every two rankings of a prompt."""
    return _rows_agreement(*_position_rows([first, second])[1])


def kendall_tau_b(first: Ranking, second: Ranking) -> float | None:
    """Kendall's τ_b over the shared candidates (Kendall 1945; the variant scipy computes):

        τ_b = (n_c − n_d) / sqrt((n_0 − n_1)(n_0 − n_2))

    n_0 = pairs, n_c/n_d = concordant/discordant pairs, n_1/n_2 = pairs tied in the first/second
    ranking. None when undefined: fewer than two shared candidates, or one ranking ties them all.
    """
    pairs = _shared_pairs(first, second)
    n0 = len(pairs)
    concordant = sum(1 for s1, s2 in pairs if s1 * s2 > 0)
    discordant = sum(1 for s1, s2 in pairs if s1 * s2 < 0)
    tied_first = sum(1 for s1, _ in pairs if s1 == 0)
    tied_second = sum(1 for _, s2 in pairs if s2 == 0)
    denominator = (n0 - tied_first) * (n0 - tied_second)
    if n0 == 0 or denominator == 0:
        return None
    return (concordant - discordant) / math.sqrt(denominator)


def krippendorff_alpha_ordinal(units: Iterable[Sequence[Ranking | None]]) -> float | None:
    """Krippendorff's α at the ordinal level for rankings of several prompts.

    `units` has one entry per prompt: the rankings of that prompt by coders 0..m−1 in a fixed
    coder order, None where a coder did not rank it. Each (prompt, candidate) is one unit of
    analysis and its value is the candidate's mid-rank in that coder's ranking, so ties are
    values like any other. Computed by the maintained `krippendorff` package. None when α is
    undefined (no unit ranked by two coders, or every value the same).
    """
    columns: list[list[float]] = []
    coders = 0
    for rankings in units:
        coders = max(coders, len(rankings))
        ranks = [ranking_mid_ranks(r) if r is not None else {} for r in rankings]
        candidates = sorted({c for r in ranks for c in r})
        for candidate in candidates:
            columns.append([r.get(candidate, math.nan) for r in ranks])
    if coders < 2 or not columns:
        return None
    matrix = np.full((coders, len(columns)), np.nan)
    for j, column in enumerate(columns):
        matrix[: len(column), j] = column
    # A unit only counts when two coders gave it a value.
    pairable = (~np.isnan(matrix)).sum(axis=0) >= 2
    if not pairable.any():
        return None
    matrix = matrix[:, pairable]
    if len(np.unique(matrix[~np.isnan(matrix)])) < 2:
        return None
    value = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal"))
    return None if math.isnan(value) else value


def consensus_ranked_pairs(rankings: Sequence[Ranking], weights: Sequence[float] | None = None) -> list[list]:
    """Merge several rankings (ties and missing candidates allowed) into one, by ranked pairs
    (Tideman 1987), optionally weighting each ranking (e.g. by its annotator's trust score).

    Why ranked pairs and not Borda or Kemeny–Young: it is Condorcet-consistent (a candidate
    every majority prefers to each other one comes first, which Borda does not guarantee); it
    works on pairwise margins, so ties and rankings of different candidate subsets need no
    special case; it is deterministic with an explicit tie-break; and it is polynomial, where
    Kemeny–Young is NP-hard (ranked pairs is its usual stand-in). Open-Assistant merges its
    rankings the same way (backend/oasst_backend/utils/ranking.py).

    1. margin(a, b) = Σ w_i over rankings with a above b − Σ w_i with b above a (ties add 0).
    2. Take pairs with a positive margin, strongest first; equal margins by the larger winning
       weight, then by candidate id, so the result never depends on input order.
    3. Lock each pair in unless it would close a cycle with pairs already locked.
    4. Read the order off the locked graph layer by layer: candidates with no locked-in winner
       above them form the next tie group. Candidates no majority separates (every ranking tied
       them, or the margin is zero) therefore come out tied.
    """
    return consensus_with_agreement(rankings, weights, agreement=False)[0]


def consensus_with_agreement(rankings: Sequence[Ranking], weights: Sequence[float] | None = None, *,
                             agreement: bool = True) -> tuple[list[list], float | None]:
    """(consensus_ranked_pairs(rankings, weights), the mean pairwise_agreement over every two of
    the rankings), from the same position rows, as a dataset snapshot needs both for every
    prompt. The mean is None when no two rankings share two candidates, and not computed (None)
    without `agreement`.

    Written for speed, because a snapshot runs it once per prompt (32 µs a prompt of three
    4-candidate rankings with a dict of votes per pair and a depth-first cycle search; 12 µs
    now, measured): candidates are numbered in id order, each ranking becomes a row of tie-group
    positions by number, transitive majorities skip steps 3–4, and the locked graph and its
    reachability are bit masks. Numbering in id order keeps every tie-break of the algorithm
    above, and the margins are summed in the same order, so the result is the same, bit for bit
    (a test checks it against the plain version)."""
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    candidates, rows = _position_rows(rankings)
    if not candidates:
        return [], None
    majorities = _majorities(rows, weights)
    order = _transitive_order(candidates, majorities) or _lock_and_layer(candidates, sorted(majorities))
    if not agreement:
        return order, None
    scores = [s for first, second in combinations(rows, 2) if (s := _rows_agreement(first, second)) is not None]
    return order, (sum(scores) / len(scores) if scores else None)


PositionRow = tuple[int | None, ...]


def _position_rows(rankings: Sequence[Ranking]) -> tuple[list, list[PositionRow]]:
    """The rankings' candidates in id order, and for each ranking the tie-group index of each
    of them (None where the ranking lacks it)."""
    positions = [ranking_positions(ranking) for ranking in rankings]
    candidates = sorted(set().union(*positions))
    return candidates, [tuple([pos.get(c) for c in candidates]) for pos in positions]


def _majorities(rows: list[PositionRow], weights: Sequence[float]) -> list[tuple[float, float, int, int]]:
    """(−margin, −winning weight, winner, loser) for every pair with a positive margin: sorted,
    the strongest comes first, then the larger winning weight, then the lower candidate number."""
    voters = list(zip(rows, weights))
    majorities = []
    for i, j in combinations(range(len(rows[0])), 2):
        above = below = 0.0  # weight of the rankings with i above j, with j above i
        for row, weight in voters:
            pi, pj = row[i], row[j]
            if pi is None or pj is None or pi == pj:
                continue
            if pi < pj:
                above += weight
            else:
                below += weight
        if above > below:
            majorities.append((below - above, -above, i, j))
        elif below > above:
            majorities.append((above - below, -below, j, i))
    return majorities


def _transitive_order(candidates: list, majorities: list[tuple[float, float, int, int]]) -> list[list] | None:
    """The consensus without steps 3–4 when a majority orders every pair and the majorities
    are transitive (the winners' win counts are n−1, n−2, …, 0): nothing can close a cycle,
    so every pair locks and the order is by wins. None otherwise. The common case (two thirds
    of random 3-annotator rankings of 4 candidates; more where annotators agree), and it
    needs no sort."""
    n = len(candidates)
    if len(majorities) != n * (n - 1) // 2:
        return None
    wins = [0] * n
    for _, _, winner, _ in majorities:
        wins[winner] += 1
    by_wins = sorted(range(n), key=wins.__getitem__, reverse=True)
    if any(wins[node] != n - 1 - place for place, node in enumerate(by_wins)):
        return None
    return [[candidates[node]] for node in by_wins]


def _lock_and_layer(candidates: list, majorities: list[tuple[float, float, int, int]]) -> list[list]:
    """Steps 3 and 4 of consensus_ranked_pairs. beats[w] and reach[w] are bit masks of the
    candidate numbers w beats directly and reaches through locked pairs."""
    n = len(candidates)
    beats, reach = [0] * n, [0] * n
    for _, _, winner, loser in majorities:
        if reach[loser] >> winner & 1:
            continue  # the loser already reaches the winner: locking would close a cycle
        beats[winner] |= 1 << loser
        gained = reach[loser] | 1 << loser
        for node in range(n):
            if node == winner or reach[node] >> winner & 1:
                reach[node] |= gained
    remaining, order = (1 << n) - 1, []
    while remaining:
        beaten = 0
        for node in range(n):
            if remaining >> node & 1:
                beaten |= beats[node]
        layer = remaining & ~beaten
        order.append([candidates[node] for node in range(n) if layer >> node & 1])
        remaining &= ~layer
    return order


@lru_cache(maxsize=1 << 14)
def _rows_agreement(first: PositionRow, second: PositionRow) -> float | None:
    """pairwise_agreement of two rankings given as position rows over the same candidates: the
    pairs both rank are those where all four positions are there.
    Cached: it depends only on the two rows' order patterns, and few recur (with 4
    candidates a few dozen), so most prompts of a snapshot reuse them (4 µs a prompt less of
    3 rankings, measured)."""
    shared = same = 0
    for i, j in combinations(range(len(first)), 2):
        a, b, c, d = first[i], first[j], second[i], second[j]
        if a is None or b is None or c is None or d is None:
            continue
        shared += 1
        same += (a < b) - (b < a) == (c < d) - (d < c)
    return same / shared if shared else None


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


# Trust from gold accuracy, smoothed towards a prior: one lucky gold item should not make an
# annotator's vote count double. With PRIOR 0.5 (about what a random strict ranking scores in
# pairwise agreement) and weight 2, one perfect gold label gives 0.67 and ten give 0.92.
TRUST_PRIOR = 0.5
TRUST_PRIOR_WEIGHT = 2.0


def trust_score(accuracies: Sequence[float], *, prior: float = TRUST_PRIOR,
                prior_weight: float = TRUST_PRIOR_WEIGHT) -> float:
    """(Σ accuracies + prior·prior_weight) / (n + prior_weight): the prior when there are none."""
    return (sum(accuracies) + prior * prior_weight) / (len(accuracies) + prior_weight)
