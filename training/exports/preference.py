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

from training.exports.common import (
    ExportFormat,
    ExportOptions,
    assistant,
    candidate_texts,
    labelled_pairs,
    prompt_messages,
    prompt_text,
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
    """The JSON lines of preference_rows, byte for byte, assembled from pieces encoded once:
    the prompt and each answer once per prompt (a prompt's K·(K−1)/2 pairs repeat the same
    texts), each candidate id once per prompt, the label fields once per ranking; per pair only
    the margin is encoded. Building and encoding a dict per pair took most of the export's time
    otherwise. Pieces are encoded by json_bytes (orjson where it writes what json writes: 3x
    faster on these lines, measured), so their floats are marked first: the prompt and answers
    with mark_floats, the margins with canonical_float."""
    for row in rows:
        pieces = None
        for labelled in row_rankings(row, options):
            label_tail = None
            for chosen, rejected, tie, margin in labelled_pairs(labelled, ties=options.ties):
                if pieces is None:
                    pieces = _row_pieces(row, conversational=conversational)
                head, answers, prompt_id, tail = pieces
                if label_tail is None:
                    label_tail = (b',"label_source":' + json_bytes(labelled.label_source)
                                  + b',"label_id":' + json_bytes(labelled.label_id)
                                  + b',"annotator":' + json_bytes(labelled.annotator) + tail)
                yield b"".join((
                    head, answers[chosen], b',"rejected":', answers[rejected], b',"prompt_id":', prompt_id,
                    b',"chosen_id":', json_bytes(chosen), b',"rejected_id":', json_bytes(rejected),
                    b',"tie":true,"margin":' if tie else b',"tie":false,"margin":',
                    b"null" if margin is None else json_bytes(canonical_float(margin)), label_tail))


def _row_pieces(row: dict, *, conversational: bool) -> tuple[bytes, dict[int, bytes], bytes, bytes]:
    """What every pair line of a row shares: the head up to the chosen answer, each answer
    encoded, the prompt id and the tail from the split on."""
    prompt = json_bytes(mark_floats(prompt_messages(row) if conversational else prompt_text(row)))
    answers = {c["id"]: json_bytes(mark_floats(assistant(c["text"]) if conversational else c["text"]))
               for c in row["candidates"]}
    return (b'{"prompt":' + prompt + b',"chosen":', answers, json_bytes(row["prompt_id"]),
            b',"split":' + json_bytes(row["split"]) + b"}\n")


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
