"""Training examples from snapshot rows, and the batch plans that feed them to the model.

Pure Python over the snapshot's row dicts (training.snapshots writes them) and a tokenizer;
no Django, no torch. Every prompt is rendered by training.ml.prompting, the renderer generation
samples from, so a model trains on exactly the text its candidates were written after.

    sft_examples(rows, tokenizer, ...)      -> one SFTExample per demonstration
    reward_groups(rows, tokenizer, ...)     -> one RewardGroup per ranked prompt: its candidates'
                                               tokens and every untied pair of its ranking(s)
    fit_prompt(tokenizer, chat, budget)     -> the prompt's tokens cut to a budget from the left,
                                               oldest turns first
    step_plan(n, per_step, seed, epoch)     -> which examples each step of an epoch takes
    microbatches(lengths, token_budget)     -> length-grouped micro-batches within a step
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from training.ml.prompting import encode_prompt, encode_response, render_chat
from training.ml.pairs import numeric_ratings, pair_margin, ranking_pairs

WRITTEN_SOURCE = "written"


def row_source(row: dict) -> str:
    """Where a prompt came from, for per-source metrics: its import format ("fgrlhf", "jsonl",
    ...) or "written" for prompts typed in the product."""
    return row.get("source_format") or (WRITTEN_SOURCE if row.get("source") != "imported" else "imported")


# --- Truncation -------------------------------------------------------------------------------

def fit_prompt(tokenizer, chat: list[dict], budget: int) -> tuple[list[int], bool]:
    """The prompt's tokens (with the generation prompt) in at most `budget` tokens, and whether
    anything was cut. Long conversations lose their oldest turns first (a user turn and the
    answer after it), the system instruction and the last user turn stay; if that is still too
    long, the first tokens go, so the end of the prompt, where the question is, stays."""
    ids = encode_prompt(tokenizer, chat)
    if len(ids) <= budget:
        return ids, False
    system = chat[:1] if chat and chat[0]["role"] == "system" else []
    turns = chat[len(system):]
    while len(turns) > 1 and len(ids) > budget:
        turns = turns[2:] if len(turns) > 2 and turns[0]["role"] == "user" else turns[1:]
        ids = encode_prompt(tokenizer, system + turns)
    return ids[-budget:] if budget > 0 else [], True


def cap_response(ids: list[int], limit: int) -> tuple[tuple[int, ...], bool]:
    """An answer's tokens kept whole up to `limit` (its first tokens beyond that)."""
    return (tuple(ids), False) if len(ids) <= limit else (tuple(ids[:limit]), True)


# --- SFT --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SFTExample:
    """One demonstration as model input: the prompt's tokens, then the answer's; only the
    answer's tokens (from `answer_start` on) are targets."""

    input_ids: tuple[int, ...]
    answer_start: int
    prompt_id: int

    @property
    def length(self) -> int:
        return len(self.input_ids)


@dataclass
class DataStats:
    """What building the examples did, reported on the run page."""

    prompts: int = 0  # prompt rows of the split that were read
    examples: int = 0  # examples made (demonstrations; ranked prompts)
    pairs: int = 0  # untied pairs kept (reward model)
    truncated_prompts: int = 0  # prompts cut to fit max_length
    truncated_responses: int = 0  # answers cut to max_response_tokens
    identical_pairs: int = 0  # pairs whose answers are the same tokens after truncation (dropped)
    skipped_prompts: int = 0  # prompts that could not be rendered (no final user turn)
    by_source: dict = field(default_factory=dict)  # examples per source

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def row_chat(row: dict) -> list[dict] | None:
    """A snapshot row's prompt as chat messages (training.ml.prompting), or None when it cannot
    be rendered (no final user turn)."""
    try:
        return render_chat(row["messages"], row.get("documents") or [])
    except (ValueError, KeyError):
        return None


def sft_examples(rows: Iterable[dict], tokenizer, *, split: str, max_length: int,
                 max_response_tokens: int) -> tuple[list[SFTExample], DataStats]:
    """One example per demonstration of the rows in `split` ("train", "validation" or "all")."""
    examples: list[SFTExample] = []
    stats = DataStats()
    for row in rows:
        if split != "all" and row.get("split") != split:
            continue
        stats.prompts += 1
        if not row.get("demonstrations"):
            continue
        chat = row_chat(row)
        if chat is None:
            stats.skipped_prompts += 1
            continue
        for demo in row["demonstrations"]:
            answer, cut = cap_response(encode_response(tokenizer, demo["text"]), max_response_tokens)
            prompt, prompt_cut = fit_prompt(tokenizer, chat, max_length - len(answer))
            stats.truncated_responses += cut
            stats.truncated_prompts += prompt_cut
            examples.append(SFTExample(input_ids=tuple(prompt) + answer, answer_start=len(prompt),
                                       prompt_id=row["prompt_id"]))
            stats.examples += 1
            source = row_source(row)
            stats.by_source[source] = stats.by_source.get(source, 0) + 1
    return examples, stats


# --- Reward model -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RewardGroup:
    """A ranked prompt: its tokens once, each ranked candidate's answer tokens, and the pairs
    (better index, worse index, margin) of its ranking(s), indexes into `responses`."""

    prompt_id: int
    prompt_ids: tuple[int, ...]
    responses: tuple[tuple[int, ...], ...]
    pairs: tuple[tuple[int, int, float], ...]
    source: str
    candidate_ids: tuple[int, ...] = ()

    @property
    def tokens(self) -> int:
        """Tokens when each answer is encoded with its own copy of the prompt."""
        return sum(len(self.prompt_ids) + len(r) for r in self.responses)

    @property
    def longest(self) -> int:
        return len(self.prompt_ids) + max(len(r) for r in self.responses)


def _row_rankings(row: dict, labels: str) -> list[tuple[list, list[dict]]]:
    """(tie groups best→worst, ratings behind them) for each ranking that makes pairs."""
    if labels == "consensus":
        consensus = row.get("consensus")
        if consensus and consensus.get("ranking"):
            used = set(consensus.get("labels") or [])
            return [(consensus["ranking"], [r["ratings"] for r in row.get("rankings", []) if r["id"] in used])]
        return []
    return [(r["ranking"], [r["ratings"]]) for r in row.get("rankings", []) if r.get("ranking")]


def reward_groups(rows: Iterable[dict], tokenizer, *, split: str, max_length: int, max_response_tokens: int,
                  labels: str = "consensus", use_rating_margin: bool = False,
                  margin_scale: float = 0.2) -> tuple[list[RewardGroup], DataStats]:
    """One group per prompt of `split` that has a ranking with at least one untied pair.

    Answers keep their first `max_response_tokens` tokens; the prompt gets what is left of
    `max_length` after the group's longest answer (so every answer fits whole). Pairs whose two
    answers are the same tokens after that are counted in `identical_pairs` and left out:
    scoring them would teach the model nothing and count as a coin flip in accuracy.
    """
    groups: list[RewardGroup] = []
    stats = DataStats()
    for row in rows:
        if split != "all" and row.get("split") != split:
            continue
        stats.prompts += 1
        rankings = _row_rankings(row, labels)
        if not rankings:
            continue
        chat = row_chat(row)
        if chat is None:
            stats.skipped_prompts += 1
            continue
        texts = {c["id"]: c["text"] for c in row.get("candidates", [])}
        raw_pairs: list[tuple[int, int, float]] = []
        for ranking, ratings in rankings:
            numeric = numeric_ratings(ratings) if use_rating_margin else []
            for better, worse, _tie in ranking_pairs(ranking):
                if better not in texts or worse not in texts:
                    continue
                margin = pair_margin(numeric, better, worse) if use_rating_margin else None
                raw_pairs.append((better, worse, (margin or 0.0) * margin_scale))
        if not raw_pairs:
            continue
        ids = sorted({c for pair in raw_pairs for c in pair[:2]})
        responses = []
        for cid in ids:
            tokens, cut = cap_response(encode_response(tokenizer, texts[cid]), max_response_tokens)
            stats.truncated_responses += cut
            responses.append(tokens)
        prompt, prompt_cut = fit_prompt(tokenizer, chat, max_length - max(len(r) for r in responses))
        stats.truncated_prompts += prompt_cut
        index = {cid: i for i, cid in enumerate(ids)}
        pairs = []
        for better, worse, margin in raw_pairs:
            i, j = index[better], index[worse]
            if responses[i] == responses[j]:
                stats.identical_pairs += 1
                continue
            pairs.append((i, j, margin))
        if not pairs:
            continue
        source = row_source(row)
        groups.append(RewardGroup(prompt_id=row["prompt_id"], prompt_ids=tuple(prompt), responses=tuple(responses),
                                  pairs=tuple(pairs), source=source, candidate_ids=tuple(ids)))
        stats.examples += 1
        stats.pairs += len(pairs)
        stats.by_source[source] = stats.by_source.get(source, 0) + len(pairs)
    return groups, stats


def split_chats(rows: Iterable[dict], split: str) -> Iterable[tuple[dict, list[dict]]]:
    """(row, its chat) for each row of `split` ("all": every row) whose prompt renders."""
    for row in rows:
        if split != "all" and row.get("split") != split:
            continue
        chat = row_chat(row)
        if chat is not None:
            yield row, chat


def best_answers(rows: Iterable[dict], tokenizer, *, split: str, max_length: int,
                 max_response_tokens: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(prompt tokens, answer tokens) of each prompt's best answers in `split`: its
    demonstrations, else its consensus's top candidates. A trained reward model is shifted so
    that these score mean 0."""
    out = []
    for row, chat in split_chats(rows, split):
        texts = [d["text"] for d in row.get("demonstrations") or []]
        if not texts and row.get("consensus") and row["consensus"].get("ranking"):
            by_id = {c["id"]: c["text"] for c in row.get("candidates", [])}
            texts = [by_id[c] for c in row["consensus"]["ranking"][0] if c in by_id]
        for text in texts:
            answer, _ = cap_response(encode_response(tokenizer, text), max_response_tokens)
            prompt, _ = fit_prompt(tokenizer, chat, max_length - len(answer))
            out.append((tuple(prompt), answer))
    return out


# --- Batch plans ------------------------------------------------------------------------------

def seeded_subset(items: Sequence, limit: int | None, *, seed: int) -> list:
    """Up to `limit` of `items` (each with a `prompt_id`): all of them when there are no more, else
    a sample seeded by `seed`, in prompt order. How every policy kind caps its training prompts."""
    if limit is None or len(items) <= limit:
        return list(items)
    return sorted(random.Random(seed).sample(list(items), limit), key=lambda item: item.prompt_id)


def epoch_order(n: int, *, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n) that depends only on (seed, epoch): a resumed run sees the
    same order as an uninterrupted one."""
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def step_plan(n: int, *, per_step: int, seed: int, epoch: int,
              lengths: Sequence[int] | None = None, group: int = 32) -> list[list[int]]:
    """The examples of each optimizer step of an epoch: a shuffled order cut into steps of
    `per_step` (the last may be smaller), deterministic in (seed, epoch).

    With `lengths`, steps are length-grouped: the shuffled order is cut into windows of `group`
    steps, each window is sorted by length and cut into steps, and the steps are shuffled again,
    so a step's examples have similar lengths (little padding) while which examples meet, and
    the order of steps, stay random. (Transformers' LengthGroupedSampler does the same with 50.)
    """
    order = epoch_order(n, seed=seed, epoch=epoch)
    if lengths is None:
        return [order[i:i + per_step] for i in range(0, n, per_step)]
    window = per_step * group
    steps: list[list[int]] = []
    for start in range(0, n, window):
        chunk = sorted(order[start:start + window], key=lambda i: (lengths[i], i))
        steps.extend(chunk[i:i + per_step] for i in range(0, len(chunk), per_step))
    random.Random(f"{seed}:{epoch}:steps").shuffle(steps)
    return steps


def microbatches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Positions 0..len(lengths)-1 grouped so that each group padded to its longest member holds
    at most `token_budget` tokens: sorted by length, so examples of a group need little padding.
    An example longer than the budget is a group of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        candidate = max(longest, lengths[i])
        if current and candidate * (len(current) + 1) > token_budget:
            groups.append(current)
            current, candidate = [], lengths[i]
        current.append(i)
        longest = candidate
    if current:
        groups.append(current)
    return groups
