"""What the export formats share: options, prompt rendering, pairs from a ranking, margins and
JSONL encoding. Pure functions over snapshot rows (dicts), no Django."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from training.ml.prompting import render_chat, render_transcript
from training.ml.pairs import numeric_ratings, pair_margin, ranking_pairs  # noqa: F401 (exports use them from here)
from studio.errors import ValidationFailed

LABELS = ("consensus", "annotators", "both")
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class ExportOptions:
    """How one export is cut from a snapshot (query parameters of the API, flags of the
    dataset_export command)."""

    # Whose rankings pairs come from: the consensus (default), every counting per-annotator
    # ranking ("annotators"), or both. Formats with a fixed layout (ranking, csv, oasst) always
    # carry both.
    labels: str = "consensus"
    # Also emit tied pairs, with "tie": true (chosen/rejected then in id order).
    ties: bool = False
    # Replace emails, phone and card numbers in every text with placeholders.
    redact: bool = False
    # Only the rows of one split ("train" or "validation"); "" for both.
    split: str = ""
    # What rows an `hf` or `openai-chat` export holds (see each format); "" for its default.
    rows: str = ""

    @classmethod
    def from_query(cls, query) -> ExportOptions:
        """From a QueryDict/dict of strings; unknown values are refused with a clear message."""
        def flag(name: str) -> bool:
            value = str(query.get(name, "")).strip().lower()
            if value in ("", "0", "false", "no", "off"):
                return False
            if value in ("1", "true", "yes", "on", "pii"):
                return True
            raise ValidationFailed(f"{name} must be true or false.", {name: ["Use 1 or 0."]})

        labels = str(query.get("labels") or "consensus").strip()
        if labels not in LABELS:
            raise ValidationFailed(f"labels must be one of {', '.join(LABELS)}.", {"labels": ["Unknown value."]})
        split = str(query.get("split") or "").strip()
        if split and split not in SPLITS:
            raise ValidationFailed("split must be train or validation.", {"split": ["Unknown value."]})
        return cls(labels=labels, ties=flag("ties"), redact=flag("redact"), split=split,
                   rows=str(query.get("rows") or "").strip())

    @property
    def consensus(self) -> bool:
        return self.labels in ("consensus", "both")

    @property
    def annotators(self) -> bool:
        return self.labels in ("annotators", "both")


# One encoder for every line: json.dumps(**options) builds a new encoder on each call.
encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def jsonl(obj) -> bytes:
    return (encode_json(obj) + "\n").encode()


def buffered(chunks: Iterable[bytes], size: int = 64 * 1024) -> Iterator[bytes]:
    """Join small chunks into ~64 KiB ones: one write per row would make the server's writes,
    not our work, the bottleneck."""
    parts: list[bytes] = []
    held = 0
    try:
        for chunk in chunks:
            parts.append(chunk)
            held += len(chunk)
            if held >= size:
                yield b"".join(parts)
                parts, held = [], 0
        if parts:
            yield b"".join(parts)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # a client that went away: the source file and temporary files are released now


# --- Prompts ----------------------------------------------------------------------------------

def prompt_messages(row: dict) -> list[dict]:
    """The prompt as chat messages ({"role", "content"} only), with its reference documents in
    the system message (after any custom instructions), where every chat template reads them:
    training.ml.prompting.render_chat, the renderer generation and training use."""
    return render_chat(row["messages"], row["documents"])


def prompt_text(row: dict) -> str:
    """The prompt as one string (TRL's "standard" format): the transcript in the Anthropic HH
    style ("Human: …\n\nAssistant:") that a model without a chat template is sampled from and
    trained on (training.ml.prompting.render_transcript), so prompt + " " + answer reads as the
    conversation."""
    return render_transcript(prompt_messages(row))


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# --- Pairs ------------------------------------------------------------------------------------

def rating_margin(ratings: Iterable[dict], chosen: int, rejected: int) -> float | None:
    """Mean of rating[chosen] − rating[rejected] over the labels that rated both (ratings are
    {candidate id as text: 1..7}); None when none did. One label's margin is its own difference."""
    diffs = []
    for r in ratings:
        a, b = r.get(str(chosen)), r.get(str(rejected))
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
                and not isinstance(b, bool):
            diffs.append(a - b)
    if not diffs:
        return None
    return round(sum(diffs) / len(diffs), 6)


class LabelledRanking(NamedTuple):
    """One ranking to take pairs from: the consensus or one annotator's label. (A NamedTuple:
    one is made per ranking of an export, and a frozen dataclass costs 3x as much to build.)"""

    label_source: str  # "consensus" | "annotator"
    label_id: int | None  # the Ranking id for an annotator's label
    annotator: str | None  # pseudonym for an annotator's label
    groups: list
    ratings: list[dict]  # the ratings behind it (one dict per label)


def row_rankings(row: dict, options: ExportOptions) -> Iterator[LabelledRanking]:
    """The consensus and/or per-annotator rankings of a snapshot row, as the options ask."""
    if options.consensus and row["consensus"]:
        used = set(row["consensus"]["labels"])
        yield LabelledRanking("consensus", None, None, row["consensus"]["ranking"],
                              [r["ratings"] for r in row["rankings"] if r["id"] in used])
    if options.annotators:
        for r in row["rankings"]:
            yield LabelledRanking("annotator", r["id"], r["annotator"], r["ranking"], [r["ratings"]])


def labelled_pairs(labelled: LabelledRanking, *, ties: bool) -> Iterator[tuple[int, int, bool, float | None]]:
    """(chosen, rejected, tie, margin) for every pair of one ranking (ranking_pairs)."""
    ratings = numeric_ratings(labelled.ratings)
    for chosen, rejected, tie in ranking_pairs(labelled.groups, ties=ties):
        yield chosen, rejected, tie, pair_margin(ratings, chosen, rejected)


def row_pairs(row: dict, options: ExportOptions) -> Iterator[dict]:
    """Every pair of a row as {"chosen_id", "rejected_id", "tie", "margin", "label_source",
    "label_id", "annotator"}, for the preference formats."""
    for labelled in row_rankings(row, options):
        for chosen, rejected, tie, margin in labelled_pairs(labelled, ties=options.ties):
            yield {"chosen_id": chosen, "rejected_id": rejected, "tie": tie, "margin": margin,
                   "label_source": labelled.label_source, "label_id": labelled.label_id,
                   "annotator": labelled.annotator}


def candidate_texts(row: dict) -> dict[int, str]:
    return {c["id"]: c["text"] for c in row["candidates"]}


def demonstration_messages(row: dict) -> Iterator[tuple[dict, list[dict]]]:
    """(demonstration, full conversation) for each demonstration of a row."""
    prompt = prompt_messages(row)
    for demo in row["demonstrations"]:
        yield demo, prompt + assistant(demo["text"])


# --- The format registry entry ----------------------------------------------------------------

@dataclass(frozen=True)
class ExportContext:
    """What a format may know about the snapshot besides its rows (the dataset card uses it)."""

    sha256: str
    project: str  # the project's name, for titles only (never hashed)
    header: dict  # the snapshot file's header: filters, split settings, consensus method
    counts: dict
    split: dict
    sources: dict  # {import format: prompts}
    created_at: str


@dataclass(frozen=True)
class ExportFormat:
    name: str  # the path segment of the API and the --format of the command
    description: str
    media_type: str
    extension: str  # of the downloaded file
    # stream(rows, context=…, options=…) -> the file's bytes in chunks
    stream: object
    # expected(counts, options) -> rows the export will hold, for a progress bar (None: unknown)
    expected: object = None
    unit: str = "rows"
