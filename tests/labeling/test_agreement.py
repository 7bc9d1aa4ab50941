"""Agreement, consensus and bias: pure functions checked against hand-computed values."""
import math
import random
from itertools import combinations

import krippendorff
import pytest

from labeling.agreement import (
    consensus_ranked_pairs,
    consensus_with_agreement,
    kendall_tau_b,
    krippendorff_alpha_ordinal,
    pairwise_agreement,
    pairwise_preferences,
    ranking_mid_ranks,
    trust_score,
)
from labeling.bias import length_bias, position_bias


def test_pairwise_preferences_and_mid_ranks():
    assert pairwise_preferences([[3], [1, 4], [2]]) == {(1, 2): 1, (1, 3): -1, (1, 4): 0, (2, 3): -1, (2, 4): -1,
                                                        (3, 4): 1}
    assert ranking_mid_ranks([[3], [1, 4], [2]]) == {3: 1, 1: 2.5, 4: 2.5, 2: 4}


def test_pairwise_agreement_hand_cases():
    # (1,2) and (1,3) agree, (2,3) is swapped.
    assert pairwise_agreement([[1], [2], [3]], [[1], [3], [2]]) == pytest.approx(2 / 3)
    # A tie against a strict order is a disagreement on that pair only.
    assert pairwise_agreement([[1, 2], [3]], [[1], [2], [3]]) == pytest.approx(2 / 3)
    # Only shared candidates are compared: {1, 4}, ordered oppositely.
    assert pairwise_agreement([[1], [2], [3], [4]], [[4], [1], [9]]) == 0.0
    assert pairwise_agreement([[1], [2]], [[1], [3]]) is None


def test_kendall_tau_b_hand_cases():
    assert kendall_tau_b([[1], [2], [3]], [[1], [2], [3]]) == pytest.approx(1.0)
    assert kendall_tau_b([[1], [2], [3]], [[3], [2], [1]]) == pytest.approx(-1.0)
    # x ranks 1,2,2,3 and y 1,2,3,4: 5 concordant, 0 discordant, one pair tied in x only:
    # τ_b = 5 / sqrt((6-1)(6-0)) = 5/√30 (scipy.stats.kendalltau gives 0.9128709291752769).
    assert kendall_tau_b([[1], [2, 3], [4]], [[1], [2], [3], [4]]) == pytest.approx(5 / math.sqrt(30))
    # Ties on both sides: x = 1,1,2,2 and y = 1,2,2,3: n_c = 3, n_d = 0, n_1 = 2, n_2 = 1:
    # τ_b = 3 / sqrt((6-2)(6-1)) = 3/√20.
    assert kendall_tau_b([[1, 2], [3, 4]], [[1], [2, 3], [4]]) == pytest.approx(3 / math.sqrt(20))
    # One swap among four: 5 concordant, 1 discordant → 4/6.
    assert kendall_tau_b([[1], [2], [3], [4]], [[2], [1], [3], [4]]) == pytest.approx(4 / 6)
    # Undefined: everything tied in one ranking, or fewer than two shared candidates.
    assert kendall_tau_b([[1, 2, 3]], [[1], [2], [3]]) is None
    assert kendall_tau_b([[1], [2]], [[2], [3]]) is None


def test_krippendorff_alpha_ordinal_hand_case():
    # One prompt, two coders: mid-ranks (1, 2, 3) and (1, 3, 2). Coincidences: o11 = 2,
    # o23 = o32 = 2; n1 = n2 = n3 = 2, n = 6. Ordinal δ²: (1,2) = 4, (2,3) = 4, (1,3) = 16.
    # D_o = (2·4 + 2·4)/6 = 16/6; D_e = 2(4·4 + 4·4 + 4·16)/(6·5) = 6.4; α = 1 − D_o/D_e = 7/12.
    alpha = krippendorff_alpha_ordinal([[[[1], [2], [3]], [[1], [3], [2]]]])
    assert alpha == pytest.approx(7 / 12)
    assert alpha == pytest.approx(krippendorff.alpha(reliability_data=[[1, 2, 3], [1, 3, 2]],
                                                     level_of_measurement="ordinal"))


def test_krippendorff_alpha_perfect_missing_and_undefined():
    units = [[[[1], [2], [3]], [[1], [2], [3]], None], [None, [[5], [4]], [[5], [4]]]]
    assert krippendorff_alpha_ordinal(units) == pytest.approx(1.0)
    # No prompt ranked by two coders: nothing to compare.
    assert krippendorff_alpha_ordinal([[[[1], [2]], None], [None, [[3], [4]]]]) is None
    # Every value the same (everything tied): undefined.
    assert krippendorff_alpha_ordinal([[[[1, 2]], [[1, 2]]]]) is None
    assert krippendorff_alpha_ordinal([]) is None


def test_ranked_pairs_tennessee_weighted():
    # The textbook example (Tideman; Wikipedia "Ranked pairs"): Memphis 42 %, Nashville 26 %,
    # Chattanooga 15 %, Knoxville 17 %. Margins: C>K 66, N>C 36, N>K 36, then N, C, K each beat
    # M by 16; no cycle, so the order is Nashville, Chattanooga, Knoxville, Memphis.
    m, n, c, k = 1, 2, 3, 4
    rankings = [[[m], [n], [c], [k]], [[n], [c], [k], [m]], [[c], [k], [n], [m]], [[k], [c], [n], [m]]]
    assert consensus_ranked_pairs(rankings, [42, 26, 15, 17]) == [[n], [c], [k], [m]]


def test_ranked_pairs_cycle_is_broken_deterministically():
    # Three annotators, three candidates, a Condorcet cycle: 1>2, 2>3 and 3>1 each 2 to 1. All
    # margins are equal, so the tie-break (candidate ids) locks 1>2, then 2>3, and drops 3>1.
    rankings = [[[1], [2], [3]], [[2], [3], [1]], [[3], [1], [2]]]
    assert consensus_ranked_pairs(rankings) == [[1], [2], [3]]
    assert consensus_ranked_pairs(list(reversed(rankings))) == [[1], [2], [3]]


def test_ranked_pairs_is_condorcet_consistent_where_borda_is_not():
    # 3 annotators A>B>C, 2 annotators B>C>A. Borda (2,1,0 points) gives B 7, A 6, so B first;
    # but A beats B 3–2 and C 3–2 head to head, so A is the Condorcet winner.
    a, b, c = 1, 2, 3
    rankings = [[[a], [b], [c]]] * 3 + [[[b], [c], [a]]] * 2
    assert consensus_ranked_pairs(rankings) == [[a], [b], [c]]


def test_ranked_pairs_ties_partial_rankings_and_weights():
    # 1 beats 3 by 3 and 2 by 1; 2 vs 3 is 1–1 (one tie): no majority, so they tie.
    assert consensus_ranked_pairs([[[1], [2, 3]], [[2], [1], [3]], [[1], [3], [2]]]) == [[1], [2, 3]]
    # Annotators who saw different subsets: 1>2 and 2>3 chain into 1, 2, 3.
    assert consensus_ranked_pairs([[[1], [2]], [[2], [3]]]) == [[1], [2], [3]]
    # Trust weights decide a 1–1 split; unweighted it is a tie.
    assert consensus_ranked_pairs([[[1], [2]], [[2], [1]]], [1.0, 3.0]) == [[2], [1]]
    assert consensus_ranked_pairs([[[1], [2]], [[2], [1]]]) == [[1, 2]]
    assert consensus_ranked_pairs([[[1, 2], [3]]] * 3) == [[1, 2], [3]]
    assert consensus_ranked_pairs([]) == []
    with pytest.raises(ValueError):
        consensus_ranked_pairs([[[1], [2]]], [1.0, 2.0])


def plain_ranked_pairs(rankings, weights=None):
    """Ranked pairs written the plain way (a dict of votes per pair, a depth-first search for
    cycles): the reference the fast consensus_ranked_pairs must match exactly."""
    weights = [1.0] * len(rankings) if weights is None else weights
    candidates = sorted({c for ranking in rankings for group in ranking for c in group})
    votes = {}
    for ranking, weight in zip(rankings, weights):
        for (a, b), sign in pairwise_preferences(ranking).items():
            if sign:
                key = (a, b) if sign > 0 else (b, a)
                votes[key] = votes.get(key, 0.0) + weight
    majorities = []
    for a, b in combinations(candidates, 2):
        margin = votes.get((a, b), 0.0) - votes.get((b, a), 0.0)
        if margin > 0:
            majorities.append((margin, votes.get((a, b), 0.0), a, b))
        elif margin < 0:
            majorities.append((-margin, votes.get((b, a), 0.0), b, a))
    majorities.sort(key=lambda m: (-m[0], -m[1], m[2], m[3]))
    beats = {c: set() for c in candidates}

    def reaches(source, target):
        stack, seen = [source], set()
        while stack:
            node = stack.pop()
            if node == target:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(beats[node])
        return False

    for _, _, winner, loser in majorities:
        if not reaches(loser, winner):
            beats[winner].add(loser)
    remaining, order = set(candidates), []
    while remaining:
        layer = sorted(remaining - {loser for c in remaining for loser in beats[c]})
        order.append(layer)
        remaining -= set(layer)
    return order


def plain_agreement(first, second):
    """pairwise_agreement written the plain way: the verdicts on the pairs both rankings hold."""
    a, b = pairwise_preferences(first), pairwise_preferences(second)
    shared = [pair for pair in a if pair in b]
    return sum(a[pair] == b[pair] for pair in shared) / len(shared) if shared else None


def random_ranking(rng, candidates):
    """A ranking of a random subset (at least 2) of `candidates`, with random ties."""
    chosen = rng.sample(candidates, rng.randint(2, len(candidates)))
    groups = []
    for c in chosen:
        if groups and rng.random() < 0.3:
            groups[-1].append(c)
        else:
            groups.append([c])
    return groups


def test_fast_ranked_pairs_and_agreement_match_the_plain_versions_exactly():
    rng = random.Random(7)
    for _ in range(3000):
        candidates = rng.sample(range(1, 60), rng.randint(2, 7))
        rankings = [random_ranking(rng, candidates) for _ in range(rng.randint(1, 6))]
        # Equal weights (many equal margins: the tie-breaks), trust-like floats, small integers.
        weights = rng.choice([None, [rng.choice([0.5, 0.6666666666666666, 0.9]) for _ in rankings],
                              [rng.randint(1, 3) for _ in rankings]])
        expected = plain_ranked_pairs(rankings, weights)
        assert consensus_ranked_pairs(rankings, weights) == expected, (rankings, weights)
        merged, agreement = consensus_with_agreement(rankings, weights)
        assert merged == expected
        for first, second in combinations(rankings, 2):
            assert pairwise_agreement(first, second) == plain_agreement(first, second)
        scores = [s for a, b in combinations(rankings, 2) if (s := plain_agreement(a, b)) is not None]
        assert agreement == (sum(scores) / len(scores) if scores else None)  # exactly, not approximately


def test_consensus_with_agreement_hand_case():
    # Two of three annotators agree fully; the third swaps 1 and 2: agreement 1, 2/3, 2/3.
    merged, agreement = consensus_with_agreement([[[1], [2], [3]], [[1], [2], [3]], [[2], [1], [3]]])
    assert merged == [[1], [2], [3]]
    assert agreement == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert consensus_with_agreement([[[1], [2]]]) == ([[1], [2]], None)  # one ranking: nothing to agree with
    assert consensus_with_agreement([[[1], [2]], [[3], [4]]]) == ([[1, 3], [2, 4]], None)  # nothing shared
    assert consensus_with_agreement([]) == ([], None)
    assert consensus_with_agreement([[[1], [2]], [[2], [1]]], agreement=False) == ([[1, 2]], None)


def test_trust_score_smooths_towards_the_prior():
    assert trust_score([]) == 0.5
    assert trust_score([1.0]) == pytest.approx(2 / 3)
    assert trust_score([0.0, 0.0]) == pytest.approx(0.25)


def test_position_bias_hand_case():
    labels = [
        ([1, 2, 3], [[1], [2], [3]]),  # first shown wins
        ([2, 1, 3], [[1, 2], [3]]),  # first shown shares the win with one other: 1/2
        ([3, 1], [[3], [1]]),  # first shown wins
        ([1, 2], [[2], [1]]),  # last shown wins
        ([], [[1], [2]]),  # no stored order: left out
    ]
    result = position_bias(labels)
    assert result["labels"] == 4
    assert result["first_wins"] == pytest.approx(2.5 / 4)
    assert result["last_wins"] == pytest.approx(1 / 4)
    assert result["chance"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2 + 1 / 2) / 4)
    assert position_bias([])["first_wins"] is None


def test_length_bias_hand_case():
    labels = [
        ([[1], [2], [3]], {1: 10, 2: 5, 3: 5}),  # 1 beats 2 and 3, both shorter; 2 vs 3 same length
        ([[2], [1]], {1: 10, 2: 3}),  # the shorter wins
        ([[1, 2]], {1: 10, 2: 3}),  # a tie is no comparison
    ]
    assert length_bias(labels) == {"pairs": 3, "longer_wins": pytest.approx(2 / 3)}
    assert length_bias([]) == {"pairs": 0, "longer_wins": None}
