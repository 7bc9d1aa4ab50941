"""Dataset snapshots: freeze a project's labels into canonical JSONL named by its sha256.

Training reads snapshots only (never the live label tables), so that every model can be traced
back to exactly the labels that made it; this is why snapshots belong to `training/`.

The file is a header line, then one line per prompt sorted by prompt id:

    {"snapshot": {"format": "rlhf-studio-snapshot", "schema": 1, "project_id": 3, "filters": {…},
                  "split": {…}, "consensus": {…}, "annotators": "…"}}
    {"prompt_id": 7, "messages": […], "documents": […], "split": "train", "demonstrations": […],
     "candidates": […], "rankings": […], "consensus": {…} | null, "agreement": 0.83 | null, …}

Every line is `json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":"))` (written
by orjson where that gives the same bytes: see canonical_line) and rows, candidates,
demonstrations and rankings are ordered by id, so the same labels with the same filters give
the same bytes and the same sha256. Nothing that changes without the labels changing goes in
(no snapshot time, no project name or slug, no usernames).

Built in one streaming pass, so memory stays flat however many labels a project has: on
PostgreSQL one query returns a row per prompt with its candidates, rankings and demonstrations
aggregated as JSON, streamed; elsewhere four queries (prompts, candidates, counting rankings,
demonstrations) each ordered by prompt id are read in chunks and merged prompt by prompt.
Consensus is computed per prompt with the same rule as labeling.stats.project_consensus (each
annotator's latest counting label, ranked pairs weighted by gold trust; a test holds the two
equal). project_consensus itself is not called: it loads every label of the project into one
dict, and filters change which labels and candidates count.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from functools import lru_cache
from pathlib import Path

import orjson  # pinned in requirements: orjson==3.13.0
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, TextField
from django.db.models.functions import Cast
from django.utils.dateparse import parse_date, parse_datetime

from labeling.agreement import consensus_with_agreement, trust_score
from labeling.gold import gold_rankings, trust_weights
from labeling.models import Candidate, Demonstration, Project, Prompt, Source
from labeling.review import ranking_counting_list
from studio.errors import NotFound, PermissionDeniedError, ValidationFailed
from studio.roles import ADMIN, has_role
from training.models import SNAPSHOT_SCHEMA_VERSION, DatasetSnapshot

SNAPSHOT_FORMAT = "rlhf-studio-snapshot"
SNAPSHOT_DIR = "snapshots"  # under settings.DATA_DIR
SPLIT_SALT = "rlhf-studio-split"
PSEUDONYM_SALT = "rlhf-studio-annotator"
IMPORTED = Source.IMPORTED.value  # the plain str: comparing with the enum member costs more


# --- Filters and split ------------------------------------------------------------------------

@dataclass(frozen=True)
class SnapshotFilters:
    """Which labels a snapshot holds. Rejected labels never do (they do not count anywhere)."""

    # Labels (rankings, demonstrations) created in [created_from, created_to); a prompt is kept
    # when it was created in the range or has a label in it.
    created_from: datetime | None = None
    created_to: datetime | None = None
    # Keep a prompt's rankings only when the mean pairwise agreement of its annotators' labels
    # is at least this (0..1); a prompt ranked by one annotator has no agreement and is dropped.
    min_agreement: float | None = None
    # Drop candidates the safety screen flagged (Candidate.safety_flags), and them from rankings.
    exclude_flagged_candidates: bool = False
    # Drop rankings in which the annotator flagged a candidate or marked all answers bad.
    exclude_flagged_labels: bool = False
    # Drop imported prompts (with everything on them), imported demonstrations and rankings.
    exclude_imported: bool = False

    def as_dict(self) -> dict:
        data = asdict(self)
        for key in ("created_from", "created_to"):
            if data[key] is not None:
                data[key] = _iso(data[key])
        return data

    @property
    def has_date_range(self) -> bool:
        return self.created_from is not None or self.created_to is not None

    def in_range(self, moment: datetime) -> bool:
        return ((self.created_from is None or moment >= self.created_from)
                and (self.created_to is None or moment < self.created_to))


@dataclass(frozen=True)
class SplitSettings:
    """The deterministic train/validation split by prompt."""

    # Share of prompts that go to validation.
    validation_fraction: float = 0.1
    # Change it to draw a different (still deterministic) split.
    seed: int = 0

    def as_dict(self) -> dict:
        return {"validation_fraction": self.validation_fraction, "seed": self.seed,
                "method": f"sha256('{SPLIT_SALT}:<seed>:<prompt content_hash>') < fraction -> validation"}


def prompt_split(*, content_hash: str, settings: SplitSettings) -> str:
    """"train" or "validation" for a prompt, from a hash of its content and the seed: the same
    prompt always lands on the same side, and so do duplicates of it (same content, other ids),
    so the validation set never holds a copy of a training prompt."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{settings.seed}:{content_hash}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    return "validation" if draw < settings.validation_fraction else "train"


def _fail(field_name: str, message: str):
    raise ValidationFailed(message, {field_name: [message]})


def _parse_moment(value, *, field_name: str, end: bool) -> datetime | None:
    """A date or datetime (ISO 8601) as an aware UTC datetime. A bare date as `created_to` means
    the whole of that day is included."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value + timedelta(days=1) if end else value, time.min)
    elif isinstance(value, str):
        text = value.strip()
        # A bare date first: Python's fromisoformat (under parse_datetime) reads it as midnight.
        try:
            day = parse_date(text) if len(text) == 10 else None
        except ValueError:  # well formed but not a day, e.g. 2026-02-30
            day = None
        moment = datetime.combine(day + timedelta(days=1) if end else day, time.min) if day else None
        if moment is None:
            try:
                moment = parse_datetime(text)
            except ValueError:
                moment = None
        if moment is None:
            _fail(field_name, f"{field_name}: {value!r} is not a date (YYYY-MM-DD) or an ISO 8601 datetime.")
    else:
        _fail(field_name, f"{field_name} must be a date or datetime text.")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt_timezone.utc)
    return moment.astimezone(dt_timezone.utc)


def _parse_bool(value, *, field_name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    if value is None:
        return False
    _fail(field_name, f"{field_name} must be true or false.")


def _parse_fraction(value, *, field_name: str, allow_one: bool) -> float | None:
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        _fail(field_name, f"{field_name} must be a number between 0 and 1.")
    if isinstance(value, bool) or math.isnan(number) or number < 0 or number > 1 or (number == 1 and not allow_one):
        _fail(field_name, f"{field_name} must be between 0 and {'1' if allow_one else 'below 1'}.")
    return number


FILTER_FIELDS = ("created_from", "created_to", "min_agreement", "exclude_flagged_candidates",
                 "exclude_flagged_labels", "exclude_imported")
SPLIT_FIELDS = ("validation_fraction", "split_seed")


def snapshot_spec_clean(data: dict | None) -> tuple[SnapshotFilters, SplitSettings]:
    """Filters and split settings from API/page/command input; unknown keys are refused so a
    typo does not silently snapshot everything."""
    data = dict(data or {})
    unknown = sorted(set(data) - set(FILTER_FIELDS) - set(SPLIT_FIELDS))
    if unknown:
        _fail(unknown[0], f"Unknown snapshot option(s): {', '.join(unknown)}. "
                          f"Use: {', '.join(FILTER_FIELDS + SPLIT_FIELDS)}.")
    created_from = _parse_moment(data.get("created_from"), field_name="created_from", end=False)
    created_to = _parse_moment(data.get("created_to"), field_name="created_to", end=True)
    if created_from and created_to and created_from >= created_to:
        _fail("created_to", "created_to must be after created_from.")
    filters = SnapshotFilters(
        created_from=created_from,
        created_to=created_to,
        min_agreement=_parse_fraction(data.get("min_agreement"), field_name="min_agreement", allow_one=True),
        exclude_flagged_candidates=_parse_bool(data.get("exclude_flagged_candidates"),
                                               field_name="exclude_flagged_candidates"),
        exclude_flagged_labels=_parse_bool(data.get("exclude_flagged_labels"), field_name="exclude_flagged_labels"),
        exclude_imported=_parse_bool(data.get("exclude_imported"), field_name="exclude_imported"),
    )
    fraction = _parse_fraction(data.get("validation_fraction"), field_name="validation_fraction", allow_one=False)
    seed = data.get("split_seed")
    if seed in (None, ""):
        seed = 0
    try:
        if isinstance(seed, bool) or int(seed) != float(seed):
            raise ValueError
        seed = int(seed)
    except (TypeError, ValueError):
        _fail("split_seed", "split_seed must be a whole number.")
    split = SplitSettings(validation_fraction=0.1 if fraction is None else fraction, seed=seed)
    return filters, split


# --- Canonical JSON ---------------------------------------------------------------------------
#
# Every snapshot line is json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
# and must stay so byte for byte: the file's sha256 is its name. orjson writes the same bytes
# about 5x faster (6 µs against 33 µs for a typical 3.5 KB row, measured; json's encoder was the
# largest single cost of a snapshot) for str (a test checks every code point), int, bool, None,
# lists and dicts with str keys, and for the floats that Python writes without an exponent. It
# differs only on:
# - floats below 1e-4 or from 1e16 up (json "1e-07", orjson "1e-7"), NaN and ±Infinity (orjson
#   writes null). Such floats are marked (canonical_float: a float subclass) where they enter a
#   row, i.e. when the labels' JSON is decoded (json_loads) and when a float is computed (the
#   agreement); orjson never encodes a float subclass itself but hands it to _json_float, which
#   writes it as json does;
# - integers beyond 64 bits, lone surrogates and types json refuses: orjson refuses them too
#   (TypeError) and the line is written by json itself.

class _ExponentFloat(float):
    """A float that json writes with an exponent or as NaN/Infinity. Behaves as any float."""

    __slots__ = ()


def canonical_float(value: float) -> float:
    """`value`, marked when json and orjson would write it differently (see above). repr() uses
    an exponent exactly outside [1e-4, 1e16); NaN fails every comparison and is marked too."""
    if value == 0 or 1e-4 <= abs(value) < 1e16:
        return value
    return _ExponentFloat(value)


def mark_floats(obj):
    """`obj` with every float in it marked by canonical_float, for the values that reach orjson
    without passing json_loads: small ones only (it walks the whole value)."""
    if isinstance(obj, float):
        return canonical_float(obj)
    if isinstance(obj, dict):
        return {k: mark_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [mark_floats(v) for v in obj]
    return obj


def _json_float_text(value: float) -> str:
    """A float as json.dumps writes it."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _json_float(value):
    """orjson's `default`: a marked float as json writes it; anything else is refused, so that
    json (the fallback) decides, as it did before orjson."""
    if isinstance(value, float):
        return orjson.Fragment(_json_float_text(value))
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


# Datetimes and dataclasses go to _json_float (refused) as they would fail in json.dumps.
_ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_canonical = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def canonical_line(obj) -> bytes:
    """The one serialisation every snapshot line uses: the hash depends on it.
    json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + newline, written
    by orjson wherever that gives the same bytes: `obj`'s floats must be marked (see above)."""
    return canonical_line_and_writer(obj)[0]


def canonical_line_and_writer(obj) -> tuple[bytes, bool]:
    """(canonical_line(obj), True when json wrote it because orjson refused `obj`). A line
    orjson wrote holds no integer beyond 64 bits, so orjson reads it back as json does
    (DatasetSnapshot.json_fallback_lines counts the others)."""
    try:
        return orjson.dumps(obj, default=_json_float,
                            option=_ORJSON_STRICT | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE), False
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return (_canonical(obj) + "\n").encode(), True


def json_bytes(obj) -> bytes:
    """json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() (keys in insertion
    order), by orjson where that gives the same bytes, for exports: `obj`'s floats must be
    marked (canonical_float, mark_floats)."""
    try:
        return orjson.dumps(obj, default=_json_float, option=_ORJSON_STRICT)
    except TypeError:
        return _compact(obj).encode()


def _decode_float(text: str) -> float:
    return canonical_float(float(text))


# json.loads with every float marked by canonical_float ("NaN", "Infinity" included), for the
# labels' JSON as the database returns it. The hook runs for floats only, which are few.
json_loads = json.JSONDecoder(parse_float=_decode_float, parse_constant=_decode_float).decode

# Digits to "0", everything else to "1": a run of n digits is then one substring search.
_DIGIT_SHAPE = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x31 for byte in range(256))
_LONG_NUMBER = b"0" * 19


def postgresql_json_loads(text: str):
    """json_loads(text) for JSON written by PostgreSQL (jsonb values, json_build_array), through
    orjson where that gives the same objects: 9 µs against 19 µs for a prompt's row, the
    scan included (measured). PostgreSQL writes numbers as numeric does, never with an
    exponent and never NaN, so a float that needs marking shows as "0.0000…" (below 1e-4) or
    with 17 digits or more before the point (from 1e16 up); 17 digits in a row also catch the
    integers orjson would turn into floats (beyond 64 bits). Such rows go to json_loads."""
    data = text.encode()
    if b"0.0000" in data or b"0" * 17 in data.translate(_DIGIT_SHAPE):
        return json_loads(text)
    return orjson.loads(data)


def orjson_line_loads(line: bytes):
    """json.loads(line) for a line orjson wrote (canonical_line_and_writer): orjson reads it
    as json does, but for NaN and ±Infinity, which it refuses and json reads."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def snapshot_line_loads(line: bytes):
    """json.loads(line), through orjson where it gives the same objects: 1.6x faster on
    snapshot rows (measured, scan included). orjson turns integers beyond 64 bits into floats
    (ints of up to 18 digits always fit), so lines with 19 digits in a row go to json; as do
    lines orjson refuses and json reads (NaN, Infinity, lone surrogates). Floats come back
    unmarked, as from json.loads."""
    if _LONG_NUMBER not in line.translate(_DIGIT_SHAPE):
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    return json.loads(line)


# --- Building one prompt's row (pure) ---------------------------------------------------------

@lru_cache(maxsize=1 << 16)  # a hash per label otherwise; annotators are few
def annotator_pseudonym(user_id: int | None) -> str | None:
    """A stable pseudonymous id for an annotator: the same person has the same id in every
    snapshot (so per-annotator models and agreement work downstream), but the file carries no
    username, which is often a real name or an email address and would travel with a dataset
    shared outside the Studio. Not salted with SECRET_KEY: rotating the key must not change the
    hashes of snapshots made from the same labels. Pseudonymous, not anonymous: whoever can
    read the user table can map it back."""
    if user_id is None:
        return None
    return "annotator-" + hashlib.sha256(f"{PSEUDONYM_SALT}:{user_id}".encode()).hexdigest()[:12]


def _iso(moment: datetime) -> str:
    return moment.astimezone(dt_timezone.utc).isoformat()


def restrict_ranking(groups: Iterable[Iterable[int]], keep: set[int]) -> list[list[int]]:
    """Tie groups with only the candidates in `keep`; groups left empty disappear."""
    restricted = [[c for c in group if c in keep] for group in groups]
    return [group for group in restricted if group]


def _restricted_ranking(groups: list[list[int]], keep: set[int]) -> list[list[int]]:
    """restrict_ranking(groups, keep), without copying in the usual case where nothing is
    dropped (a snapshot calls this for every label; the set checks run in C)."""
    for group in groups:
        if not group or not keep.issuperset(group):
            return restrict_ranking(groups, keep)
    return groups


def strict_pair_count(groups: list[list]) -> int:
    """How many (better, worse) pairs a ranking yields: all pairs minus those inside a tie."""
    n = squares = 0
    for group in groups:
        k = len(group)
        n += k
        squares += k * k
    return (n * n - squares) // 2  # C(n,2) − Σ C(k,2)


def _label_is_flagged(all_bad: bool, flags: dict | None) -> bool:
    return bool(all_bad) or any(bool(v) for v in (flags or {}).values())


PRIOR_TRUST = trust_score([])  # the consensus weight of an annotator without gold labels


def prompt_consensus_and_agreement(labels: list[tuple[int, int, list]], trust: dict[int, float] | None
                                   ) -> tuple[dict | None, float | None]:
    """The prompt's consensus (ranked pairs over each annotator's latest label, weighted by
    trust, as labeling.stats.project_consensus) and the mean pairwise agreement between those
    labels (None with fewer than two). `labels`: (label id, annotator id, tie groups)."""
    latest: dict[int, tuple[int, list]] = {}
    for label_id, annotator_id, groups in sorted(labels):  # by id: the latest label wins
        latest[annotator_id] = (label_id, groups)
    if not latest:
        return None, None
    annotators = sorted(latest)
    rankings = [latest[a][1] for a in annotators]
    weights = None if trust is None else [trust.get(a, PRIOR_TRUST) for a in annotators]
    ranking, agreement = consensus_with_agreement(rankings, weights)
    consensus = {
        "ranking": ranking,
        "labels": sorted(latest[a][0] for a in annotators),
        "method": "ranked_pairs",
        "weighted": trust is not None,
    }
    return consensus, None if agreement is None else canonical_float(round(agreement, 6))


# The columns each source hands snapshot_prompt_row, in this order (a row per table as a list:
# the PostgreSQL query builds them as JSON arrays, and dicts would cost more than the rest).
# created_at is last in every table, and the prompt's JSON columns come after it.
PROMPT_COLUMNS = ("id", "kind", "source", "source_format", "external_id", "content_hash", "created_at",
                  "messages", "documents")
CANDIDATE_COLUMNS = ("id", "text", "source", "model__name", "generation", "safety_flags")
RANKING_COLUMNS = ("id", "annotator_id", "ranking", "shown_order", "ratings", "flags", "pairwise", "all_bad",
                   "comment", "source", "created_at")
DEMONSTRATION_COLUMNS = ("id", "text", "author_id", "source", "created_at")


def snapshot_prompt_row(*, prompt: Sequence, candidates: list[Sequence], rankings: list[Sequence],
                        demonstrations: list[Sequence], filters: SnapshotFilters, split: SplitSettings,
                        trust: dict[int, float] | None, gold: list[list[int]] | None) -> dict | None:
    """One prompt's canonical row, or None when the filters leave nothing of it.

    Inputs are sequences in the order of PROMPT_COLUMNS, CANDIDATE_COLUMNS, RANKING_COLUMNS and
    DEMONSTRATION_COLUMNS; times are already ISO 8601 UTC text (`_iso`), JSON already decoded
    with its floats marked (json_loads); rankings are the prompt's counting ones; every list is
    sorted by id. The date range is already applied to rankings and demonstrations (in SQL).
    """
    prompt_id, kind, source, source_format, external_id, content_hash, created_at, messages, documents = prompt
    if filters.exclude_flagged_candidates:
        candidates = [c for c in candidates if not c[5]]  # safety_flags
    keep = {c[0] for c in candidates}
    keys = {str(c) for c in keep}
    if filters.exclude_flagged_labels:
        rankings = [r for r in rankings if not _label_is_flagged(r[7], r[5])]  # all_bad, flags
    # A prompt created outside the date range stays when it has a label inside it.
    if (filters.has_date_range and not (demonstrations or rankings)
            and not filters.in_range(datetime.fromisoformat(created_at))):
        return None

    labels, rows = [], []
    # Each list and dict below is the label's own (decoded for this row), so when the filters
    # drop nothing from it, it is used as it is: the set checks cost less than the copies.
    for (label_id, annotator_id, groups, shown_order, ratings, flags, pairwise, all_bad, comment, label_source,
         label_created_at) in rankings:
        groups = _restricted_ranking(groups or [], keep)
        if not groups:
            continue  # it ranked only candidates that were dropped
        labels.append((label_id, annotator_id, groups))
        shown_order, ratings, flags = shown_order or [], ratings or {}, flags or {}
        rows.append({
            "id": label_id,
            "annotator": annotator_pseudonym(annotator_id),
            "ranking": groups,
            "shown_order": shown_order if keep.issuperset(shown_order) else [c for c in shown_order if c in keep],
            "ratings": ratings if keys.issuperset(ratings) else {k: v for k, v in ratings.items() if k in keys},
            "flags": flags if keys.issuperset(flags) else {k: v for k, v in flags.items() if k in keys},
            "pairwise": [p for p in pairwise if p[0] in keep and p[1] in keep] if pairwise else [],
            "all_bad": all_bad,
            "comment": comment,
            "source": label_source,
            "created_at": label_created_at,
        })
    consensus, agreement = prompt_consensus_and_agreement(labels, trust)
    if filters.min_agreement is not None and (agreement is None or agreement < filters.min_agreement):
        rows, consensus = [], None

    return {
        "prompt_id": prompt_id,
        "content_hash": content_hash,
        "kind": kind,
        "messages": messages,
        "documents": documents or [],
        "source": source,
        "source_format": source_format,
        "external_id": external_id,
        "created_at": created_at,
        "split": prompt_split(content_hash=content_hash or f"prompt:{prompt_id}", settings=split),
        "gold": restrict_ranking(gold, keep) if gold else None,
        "demonstrations": [
            {"id": d_id, "text": text, "author": annotator_pseudonym(author_id), "source": d_source,
             "created_at": d_created_at}
            for d_id, text, author_id, d_source, d_created_at in demonstrations
        ],
        "candidates": [
            {"id": c_id, "text": text, "source": c_source, "model": model, "generation": generation or {},
             "safety_flags": safety_flags or []}
            for c_id, text, c_source, model, generation, safety_flags in candidates
        ],
        "rankings": rows,
        "consensus": consensus,
        "agreement": agreement,
    }


# --- Reading the labels out of the database ---------------------------------------------------
#
# Two sources give snapshot_prompt_row the same lists: one query on PostgreSQL, four merged
# streams elsewhere. The pinned-bytes tests run on both databases and expect the same hashes.

def _label_querysets(*, filters: SnapshotFilters):
    """The candidates, counting rankings and demonstrations a snapshot reads (of any prompt:
    each source restricts them to the project's), with the filters SQL can apply: imported
    labels, the date range. The date range is not applied to prompts (see snapshot_prompt_row)."""
    candidates = Candidate.objects.all()
    rankings = ranking_counting_list()
    demonstrations = Demonstration.objects.all()
    if filters.exclude_imported:
        rankings = rankings.exclude(source=Source.IMPORTED)
        demonstrations = demonstrations.exclude(source=Source.IMPORTED)
    if filters.created_from is not None:
        rankings = rankings.filter(created_at__gte=filters.created_from)
        demonstrations = demonstrations.filter(created_at__gte=filters.created_from)
    if filters.created_to is not None:
        rankings = rankings.filter(created_at__lt=filters.created_to)
        demonstrations = demonstrations.filter(created_at__lt=filters.created_to)
    return candidates, rankings, demonstrations


def _prompts(*, project: Project, filters: SnapshotFilters):
    prompts = Prompt.objects.filter(project=project).order_by("id")
    return prompts.exclude(source=Source.IMPORTED) if filters.exclude_imported else prompts


JSON_COLUMNS = {"messages", "documents", "generation", "safety_flags", "ranking", "shown_order", "ratings",
                "flags", "pairwise"}


# PostgreSQL: one query, one row per prompt, its candidates, rankings and demonstrations
# aggregated by the server as JSON arrays of arrays (json_agg in a LATERAL join: an index scan on
# prompt_id per prompt), streamed (psycopg's Cursor.stream): the server builds the next rows on
# another core while Python works on these, and memory is held to what the socket buffers.
# With the four chunked streams of the portable source (below) Python waited for every chunk
# and paid Django's per-value converters: reading the labels took 1.8 s of Python time at
# 100,000 rankings, now 0.5 s (py-spy, bench/export.py). The SQL is assembled from the
# querysets' own SQL, so the filters and what counts as a label
# (labeling.review.ranking_counting_list) are Django's, written once.
STREAM_ROWS = 100  # rows per chunk handed over by libpq (chunked mode, libpq 17+): the first row comes
# 15-20 ms sooner than with 500, and the rest no slower (measured at 10,000 and 100,000 rankings)


def _utc_text(column: str) -> str:
    """SQL: a timestamp as "YYYY-MM-DDTHH:MM:SS.ffffff" UTC text, made _iso() text by
    _iso_from_utc_text (to_json would trim the microseconds' trailing zeros; isoformat does not)."""
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"


def _iso_from_utc_text(text: str) -> str:
    """_iso() of the moment _utc_text wrote: isoformat leaves out a zero microsecond."""
    return (text[:-7] if text.endswith(".000000") else text) + "+00:00"


def _sql(qs, columns: tuple[str, ...]) -> tuple[str, tuple]:
    """The SQL of qs.values(columns), related lookups (model__name) named model_name."""
    plain = [c for c in columns if "__" not in c]
    related = {c.replace("__", "_"): F(c) for c in columns if "__" in c}
    qs = qs.values(*plain, **related)
    return qs.query.get_compiler(using=qs.db).as_sql()


def _json_column_list(alias: str, columns: tuple[str, ...]) -> str:
    """SQL: `alias`'s columns (as _sql named them) for json_build_array, times as _utc_text."""
    return ", ".join(_utc_text(f"{alias}.created_at") if c == "created_at" else f"{alias}.{c.replace('__', '_')}"
                     for c in columns)


def _postgresql_query(*, project: Project, filters: SnapshotFilters) -> tuple[str, tuple]:
    candidates, rankings, demonstrations = _label_querysets(filters=filters)
    # The prompts are sorted in their own subquery so that the server sorts those narrow rows
    # and streams the aggregates after; with ORDER BY on the outer query the planner may build
    # every aggregate first and sort them all (it did for a project of 10% of the prompts).
    prompts_sql, params = _sql(_prompts(project=project, filters=filters), PROMPT_COLUMNS)
    joins = []
    for name, qs, columns in (("c", candidates, CANDIDATE_COLUMNS), ("r", rankings, RANKING_COLUMNS),
                              ("d", demonstrations, DEMONSTRATION_COLUMNS)):
        sql, more = _sql(qs.order_by(), ("prompt_id", *columns))
        joins.append(f"LEFT JOIN LATERAL (SELECT json_agg(json_build_array({_json_column_list('x', columns)}) "
                     f"ORDER BY x.id) AS rows FROM ({sql}) x WHERE x.prompt_id = p.id) {name} ON true")
        params += more
    scalars = [c for c in PROMPT_COLUMNS if c not in JSON_COLUMNS]  # created_at last, as in PROMPT_COLUMNS
    return (f"SELECT {_json_column_list('p', scalars)}, "
            f"json_build_array(p.messages, p.documents, c.rows, r.rows, d.rows)::text "
            f"FROM ({prompts_sql}) p {' '.join(joins)} ORDER BY p.id"), params


def _postgresql_records(*, project: Project, filters: SnapshotFilters) -> Iterator[tuple]:
    import psycopg  # the PostgreSQL driver, there only

    sql, params = _postgresql_query(project=project, filters=filters)
    # psycopg's own cursor: Django's has no stream(). Chunks of rows need libpq 17, else one by one.
    size = STREAM_ROWS if psycopg.pq.version() >= 170000 else 1
    with connection.cursor() as cursor:
        # The planner prices the per-prompt aggregates high enough to JIT-compile the query,
        # which costs more (0.4 s) than it saves (measured at 100,000 rankings). LOCAL: until
        # the end of the transaction _consistent_rows opened.
        cursor.execute("SET LOCAL jit = off")
        for *scalars, created_at, packed in cursor.cursor.stream(sql, params, size=size):
            messages, documents, candidate_rows, ranking_rows, demonstration_rows = postgresql_json_loads(packed)
            ranking_rows, demonstration_rows = ranking_rows or [], demonstration_rows or []
            for row in ranking_rows + demonstration_rows:
                row[-1] = _iso_from_utc_text(row[-1])  # created_at, their last column
            prompt = (*scalars, _iso_from_utc_text(created_at), messages, documents)  # PROMPT_COLUMNS
            yield prompt, candidate_rows or [], ranking_rows, demonstration_rows


# Elsewhere (SQLite): four queries (prompts, candidates, rankings, demonstrations), each ordered
# by prompt id, read in chunks and merged prompt by prompt.
CHUNK_SIZE = 2000  # rows fetched per round trip by each of the four queries


def _stream(qs, columns: tuple[str, ...], *, by_prompt: bool) -> Iterator[list]:
    """Rows of `qs` as lists in the order of `columns` ([prompt_id] + columns with `by_prompt`),
    read in chunks. JSON columns are read as their text and decoded by json_loads (floats
    marked, as canonical_line needs them), not by Django's JSONField; times become _iso() text."""
    lead = ["prompt_id"] if by_prompt else []
    selected = [*lead, *(Cast(F(c), TextField()) if c in JSON_COLUMNS else c for c in columns)]
    json_at = [i for i, c in enumerate([*lead, *columns]) if c in JSON_COLUMNS]
    time_at = [i for i, c in enumerate([*lead, *columns]) if c == "created_at"]
    for values in qs.values_list(*selected).iterator(chunk_size=CHUNK_SIZE):
        row = list(values)
        for i in json_at:
            row[i] = None if row[i] is None else json_loads(row[i])
        for i in time_at:
            row[i] = _iso(row[i])
        yield row


class _ByPrompt:
    """Rows (lists starting with the prompt id) of a query ordered by prompt id, handed out one
    prompt at a time, without the prompt id (a merge join)."""

    def __init__(self, rows: Iterator[list]):
        self._rows = rows
        self._next = next(rows, None)

    def take(self, prompt_id: int) -> list[list]:
        found = []
        while self._next is not None and self._next[0] <= prompt_id:
            if self._next[0] == prompt_id:
                found.append(self._next[1:])
            self._next = next(self._rows, None)
        return found


def _portable_records(*, project: Project, filters: SnapshotFilters) -> Iterator[tuple]:
    candidates, rankings, demonstrations = _label_querysets(filters=filters)

    def by_prompt(qs, columns):
        return _ByPrompt(_stream(qs.filter(prompt__project=project).order_by("prompt_id", "id"), columns,
                                 by_prompt=True))

    candidate_rows = by_prompt(candidates, CANDIDATE_COLUMNS)
    ranking_rows = by_prompt(rankings, RANKING_COLUMNS)
    demonstration_rows = by_prompt(demonstrations, DEMONSTRATION_COLUMNS)
    for prompt in _stream(_prompts(project=project, filters=filters), PROMPT_COLUMNS, by_prompt=False):
        pid = prompt[0]
        yield prompt, candidate_rows.take(pid), ranking_rows.take(pid), demonstration_rows.take(pid)


def snapshot_source_rows(*, project: Project, filters: SnapshotFilters, split: SplitSettings,
                         progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Every row of the snapshot of `project`, in prompt id order, streamed. `progress` is
    called with the number of the project's prompts read so far (kept or left out by the
    filters), after each of them.

    The records are closed as soon as this generator ends or fails, not when the garbage
    collector gets to them: on PostgreSQL an open stream holds the connection (psycopg's lock,
    which a rollback waits for), so a traceback that kept it alive would hang the next query."""
    trust = trust_weights(project=project)
    gold = gold_rankings(project=project)
    source = _postgresql_records if connection.vendor == "postgresql" else _portable_records
    with closing(source(project=project, filters=filters)) as records:
        for done, (prompt, candidates, rankings, demonstrations) in enumerate(records, start=1):
            row = snapshot_prompt_row(prompt=prompt, candidates=candidates, rankings=rankings,
                                      demonstrations=demonstrations, filters=filters, split=split, trust=trust,
                                      gold=gold.get(prompt[0]))
            if row is not None:
                yield row
            if progress is not None:
                progress(done)


def snapshot_header(*, project: Project, filters: SnapshotFilters, split: SplitSettings) -> dict:
    return mark_floats({"snapshot": {
        "format": SNAPSHOT_FORMAT,
        "schema": SNAPSHOT_SCHEMA_VERSION,
        "project_id": project.pk,
        "filters": filters.as_dict(),
        "split": split.as_dict(),
        "consensus": {"method": "ranked_pairs", "weighted_by": "gold trust",
                      "labels": "each annotator's latest counting label"},
        "annotators": "pseudonymous: 'annotator-' + sha256 prefix of the user id",
    }})


@dataclass
class _Counts:
    prompts: int = 0
    demonstrations: int = 0
    candidates: int = 0
    rankings: int = 0
    consensus: int = 0
    consensus_pairs: int = 0
    annotator_pairs: int = 0
    imported_prompts: int = 0
    train: int = 0
    validation: int = 0
    annotators: set = field(default_factory=set)
    sources: dict = field(default_factory=dict)

    def add(self, row: dict) -> None:
        self.prompts += 1
        self.demonstrations += len(row["demonstrations"])
        self.candidates += len(row["candidates"])
        self.rankings += len(row["rankings"])
        for r in row["rankings"]:
            self.annotators.add(r["annotator"])
            self.annotator_pairs += strict_pair_count(r["ranking"])
        if row["consensus"]:
            self.consensus += 1
            self.consensus_pairs += strict_pair_count(row["consensus"]["ranking"])
        if row["source"] == IMPORTED:
            self.imported_prompts += 1
            key = row["source_format"] or "unknown"
            self.sources[key] = self.sources.get(key, 0) + 1
        if row["split"] == "train":
            self.train += 1
        else:
            self.validation += 1

    def as_dict(self) -> dict:
        return {"prompts": self.prompts, "demonstrations": self.demonstrations, "candidates": self.candidates,
                "rankings": self.rankings, "annotators": len(self.annotators), "consensus": self.consensus,
                "consensus_pairs": self.consensus_pairs, "annotator_pairs": self.annotator_pairs,
                "imported_prompts": self.imported_prompts}


def snapshot_dir() -> Path:
    path = Path(settings.DATA_DIR) / SNAPSHOT_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_snapshot_file(*, project: Project, filters: SnapshotFilters, split: SplitSettings,
                         progress: Callable[[int], None] | None = None) -> tuple[Path, str, int, int, _Counts]:
    """Stream the rows into a temporary file, hashing the bytes as they are written. The rows are
    closed as soon as anything fails (see snapshot_source_rows)."""
    tmp = snapshot_dir() / f".tmp-{uuid.uuid4().hex}.jsonl"
    digest = hashlib.sha256()
    counts = _Counts()
    size = json_lines = 0
    try:
        with (open(tmp, "wb", buffering=1 << 20) as out,
              closing(_rows_with_header(project=project, filters=filters, split=split, counts=counts,
                                        progress=progress)) as rows):
            for obj in rows:
                line, by_json = canonical_line_and_writer(obj)
                json_lines += by_json
                digest.update(line)
                out.write(line)
                size += len(line)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest(), size, json_lines, counts


def _rows_with_header(*, project, filters, split, counts: _Counts, progress=None) -> Iterator[dict]:
    yield snapshot_header(project=project, filters=filters, split=split)
    for row in _consistent_rows(project=project, filters=filters, split=split, progress=progress):
        counts.add(row)
        yield row


def _consistent_rows(*, project, filters, split, progress=None) -> Iterator[dict]:
    """The rows, read from one consistent view of the database where that is cheap.

    PostgreSQL: one REPEATABLE READ read-only transaction, so that the labels, the gold labels
    behind the trust weights and the rows agree. Inside an outer transaction (e.g. a test) the
    outer one's view is used, in a savepoint: a stream given up half-way cancels its query,
    which would otherwise abort the caller's transaction. SQLite in WAL mode keeps one read
    snapshot while any of the four statements is open, and a write transaction here would block
    annotators' submits.
    """
    if connection.vendor != "postgresql":
        yield from snapshot_source_rows(project=project, filters=filters, split=split, progress=progress)
        return
    outer = connection.in_atomic_block
    with transaction.atomic():
        if not outer:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield from snapshot_source_rows(project=project, filters=filters, split=split, progress=progress)


# --- Services ---------------------------------------------------------------------------------

def _check_admin(user) -> None:
    if user is not None and not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can create dataset snapshots.")


def snapshot_create(*, user, project: Project, filters: SnapshotFilters | None = None,
                    split: SplitSettings | None = None,
                    progress: Callable[[int], None] | None = None) -> tuple[DatasetSnapshot, bool]:
    """Freeze the project's labels, in this process. Returns (snapshot, created): when a
    snapshot with the same content exists it is returned and nothing is written (created
    False). `user` None is the system (management command). `progress` is called with the
    prompts read so far (see snapshot_prompt_total); an exception it raises (a cancelled job)
    stops the snapshot and leaves nothing behind.

    The pages and the API do not call this: they queue a snapshot job
    (training.snapshot_jobs), which calls it on a worker."""
    _check_admin(user)
    filters = filters or SnapshotFilters()
    split = split or SplitSettings()
    tmp, sha256, size, json_lines, counts = _write_snapshot_file(project=project, filters=filters, split=split,
                                                                 progress=progress)
    final = snapshot_dir() / f"{sha256}.jsonl"
    try:
        if final.exists():
            tmp.unlink()  # the same bytes (same hash): the file is never rewritten
        else:
            os.replace(tmp, final)
            final.chmod(0o444)
    finally:
        tmp.unlink(missing_ok=True)
    existing = DatasetSnapshot.objects.filter(sha256=sha256).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            snapshot = DatasetSnapshot.objects.create(
                project=project, sha256=sha256, schema_version=SNAPSHOT_SCHEMA_VERSION,
                filters=filters.as_dict(),
                split={**split.as_dict(), "train": counts.train, "validation": counts.validation},
                counts=counts.as_dict(), sources=counts.sources,
                path=str(final.relative_to(Path(settings.DATA_DIR))), size_bytes=size,
                json_fallback_lines=json_lines, created_by=user,
            )
    except IntegrityError:
        # Someone made the same snapshot at the same moment: theirs stands.
        existing = DatasetSnapshot.objects.filter(sha256=sha256).first()
        if existing is None:
            raise
        return existing, False
    return snapshot, True


def snapshot_prompt_total(*, project: Project, filters: SnapshotFilters) -> int:
    """How many of the project's prompts a snapshot with `filters` reads (the end of its
    `progress`)."""
    return _prompts(project=project, filters=filters).count()


def snapshot_spec_dict(*, filters: SnapshotFilters, split: SplitSettings) -> dict:
    """The snapshot_spec_clean input that gives back `filters` and `split` (a job stores it)."""
    return {**filters.as_dict(), "validation_fraction": split.validation_fraction, "split_seed": split.seed}


def snapshot_file_sha256(snapshot: DatasetSnapshot) -> str:
    digest = hashlib.sha256()
    with open(snapshot.file_path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot_verify(*, snapshot: DatasetSnapshot) -> bool:
    """True when the file is there and still hashes to the snapshot's name."""
    try:
        return snapshot_file_sha256(snapshot) == snapshot.sha256
    except FileNotFoundError:
        return False


# --- Reading a snapshot -----------------------------------------------------------------------

def snapshot_read_header(*, snapshot: DatasetSnapshot) -> dict:
    try:
        with open(snapshot.file_path, "rb") as f:
            return json.loads(f.readline())["snapshot"]
    except FileNotFoundError as exc:
        raise NotFound(f"The file of snapshot {snapshot.sha256} is missing from the data directory.") from exc


def snapshot_read_rows(*, snapshot: DatasetSnapshot) -> Iterator[dict]:
    """The snapshot's prompt rows, one at a time (the file is read line by line: flat memory).
    The file is closed when the generator is exhausted or closed."""
    path = snapshot.file_path
    if not path.exists():
        raise NotFound(f"The file of snapshot {snapshot.sha256} is missing from the data directory.")

    # Where the writer says every line is orjson's, no line needs scanning for long integers
    # (a tenth of an export's time, measured); otherwise each is checked.
    loads = orjson_line_loads if snapshot.json_fallback_lines == 0 else snapshot_line_loads

    def rows() -> Iterator[dict]:
        with open(path, "rb", buffering=1 << 20) as f:
            f.readline()  # the header
            for line in f:
                yield loads(line)

    return rows()
