"""`preference` and `preference-conversational`: pairs for reward models and DPO, in TRL's
preference formats.

From a K-way ranking every pair of candidates in different tie groups is one row: all
K·(K−1)/2 pairs less the tied ones (InstructGPT trains its reward model on exactly these).
Standard form (strings):

    {"prompt": "Explain…", "chosen": "…", "rejected": "…", "prompt_id": 7, "chosen_id": 31,
     "rejected_id": 33, "margin": 2.0, "tie": false, "label_source": "consensus",
     "label_id": null, "annotator": null, "split": "train"}

Conversational form: `prompt` is the chat messages, `chosen`/`rejected` one assistant message
each. `prompt_id` lets a trainer group the pairs of one ranking (one forward per candidate).
`margin` is the mean rating difference (chosen − rejected) of the labels behind the pair, null
when they gave no ratings. Pairs come from the consensus by default; `labels=annotators` gives
every annotator's own pairs (`label_id`, `annotator` set), `labels=both` both; `ties=1` adds the
tied pairs with "tie": true.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache

from training.exports.common import (
    ExportFormat,
    ExportOptions,
    LabelledRanking,
    assistant,
    candidate_texts,
    numeric_ratings,
    pair_margin,
    prompt_messages,
    prompt_text,
    ranking_pairs,
    row_pairs,
    row_rankings,
)
from training.snapshots import canonical_float, json_bytes, mark_floats


def preference_rows(rows: Iterable[dict], *, options: ExportOptions, conversational: bool) -> Iterator[dict]:
    for row in rows:
        texts = candidate_texts(row)
        prompt = None
        for pair in row_pairs(row, options):
            if prompt is None:
                prompt = prompt_messages(row) if conversational else prompt_text(row)
            chosen, rejected = texts[pair["chosen_id"]], texts[pair["rejected_id"]]
            yield {
                "prompt": prompt,
                "chosen": assistant(chosen) if conversational else chosen,
                "rejected": assistant(rejected) if conversational else rejected,
                "prompt_id": row["prompt_id"],
                **pair,
                "split": row["split"],
            }


def encoded_preference_lines(rows: Iterable[dict], *, options: ExportOptions, conversational: bool
                             ) -> Iterator[bytes]:
    """The JSON lines of preference_rows, byte for byte (one bytes object per prompt, holding
    its lines), assembled from pieces encoded once:
    the prompt and each answer once per prompt (a prompt's K·(K−1)/2 pairs repeat the same
    texts), each candidate id once per prompt, the label fields once per ranking, and integer
    margins once per value (_margin_encoder). Building and encoding a dict per pair took most
    of the export's time otherwise. Pieces are encoded by json_bytes (orjson where it writes
    what json writes: 3x faster on these lines, measured), so their floats are marked first:
    the prompt and answers with mark_floats, the margins with canonical_float."""
    for row in rows:
        lines, pieces = [], None
        for labelled in row_rankings(row, options):
            pairs = list(ranking_pairs(labelled.groups, ties=options.ties))
            if not pairs:
                continue
            if pieces is None:
                pieces = _row_pieces(row, conversational=conversational)
            head, chosen_piece, rejected_piece, id_pieces, tail = pieces
            label_tail = (b',"label_source":' + json_bytes(labelled.label_source)
                          + b',"label_id":' + json_bytes(labelled.label_id)
                          + b',"annotator":' + json_bytes(labelled.annotator) + tail)
            margin_of = _margin_encoder(labelled)
            for chosen, rejected, tie in pairs:
                lines.append(b"".join((
                    head, chosen_piece[chosen], rejected_piece[rejected], id_pieces[chosen], b',"rejected_id":',
                    id_pieces[rejected], b',"tie":true,"margin":' if tie else b',"tie":false,"margin":',
                    margin_of(chosen, rejected), label_tail)))
        if lines:
            yield b"".join(lines)


def _row_pieces(row: dict, *, conversational: bool
                ) -> tuple[bytes, dict[int, bytes], dict[int, bytes], dict[int, bytes], bytes]:
    """What the pair lines of a row are made of: the head up to the chosen answer; each
    candidate as the chosen answer (up to "rejected") and as the rejected one (up to
    "chosen_id", the prompt id between); each candidate's id; the tail from the split on."""
    prompt = json_bytes(mark_floats(prompt_messages(row) if conversational else prompt_text(row)))
    prompt_id = b',"prompt_id":' + json_bytes(row["prompt_id"]) + b',"chosen_id":'
    chosen_piece, rejected_piece, id_pieces = {}, {}, {}
    for c in row["candidates"]:
        answer = json_bytes(mark_floats(assistant(c["text"]) if conversational else c["text"]))
        chosen_piece[c["id"]] = answer + b',"rejected":'
        rejected_piece[c["id"]] = answer + prompt_id
        id_pieces[c["id"]] = json_bytes(c["id"])
    return (b'{"prompt":' + prompt + b',"chosen":', chosen_piece, rejected_piece, id_pieces,
            b',"split":' + json_bytes(row["split"]) + b"}\n")


def _margin_encoder(labelled: LabelledRanking):
    """margin_of(chosen, rejected) -> the pair's margin as JSON bytes, as pair_margin computes
    it. When every label behind the ranking rated each of its candidates with an integer (what
    the ranking page stores), the sum of the differences is the difference of the sums,
    exactly, so a pair's margin is (sums[chosen] − sums[rejected]) / labels and its bytes come
    from a small cache; otherwise each pair's margin is computed and encoded. Snapshot rows key
    ratings by str(candidate id); any other key misses here and takes the general way."""
    if not labelled.ratings:
        return _no_margin
    sums, count = {}, len(labelled.ratings)
    for candidate in {c for group in labelled.groups for c in group}:
        key, total = str(candidate), 0
        for r in labelled.ratings:
            value = r.get(key)
            if type(value) is not int:  # missing, a float, a bool…: the general way
                ratings = numeric_ratings(labelled.ratings)
                return lambda chosen, rejected: _encoded_margin(pair_margin(ratings, chosen, rejected))
            total += value
        sums[candidate] = total
    return lambda chosen, rejected: _encoded_int_margin(sums[chosen] - sums[rejected], count)


def _no_margin(chosen: int, rejected: int) -> bytes:
    return b"null"


@lru_cache(maxsize=4096)
def _encoded_int_margin(total: int, count: int) -> bytes:
    return _encoded_margin(round(total / count, 6))


def _encoded_margin(margin: float | None) -> bytes:
    return b"null" if margin is None else json_bytes(canonical_float(margin))


def stream_standard(rows, *, context, options):
    return encoded_preference_lines(rows, options=options, conversational=False)


def stream_conversational(rows, *, context, options):
    return encoded_preference_lines(rows, options=options, conversational=True)


def expected_pairs(counts: dict, options: ExportOptions) -> int | None:
    if options.ties or options.split:
        return None
    return (counts.get("consensus_pairs", 0) if options.consensus else 0) + (
        counts.get("annotator_pairs", 0) if options.annotators else 0)


STANDARD = ExportFormat(
    name="preference", description="Pairs (prompt, chosen, rejected) as strings: TRL's standard preference format.",
    media_type="application/jsonl", extension="jsonl", stream=stream_standard, expected=expected_pairs, unit="pairs")
CONVERSATIONAL = ExportFormat(
    name="preference-conversational",
    description="Pairs with the prompt as chat messages and chosen/rejected as assistant messages: TRL's "
                "conversational preference format.",
    media_type="application/jsonl", extension="jsonl", stream=stream_conversational, expected=expected_pairs,
    unit="pairs")
