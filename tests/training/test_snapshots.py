"""Snapshots: canonical, hashed, immutable; filters; the deterministic split."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta

import pytest
from django.utils import timezone

from labeling import review, stats
from labeling.models import Candidate, Ranking, Source
from studio.errors import PermissionDeniedError, ValidationFailed
from tests.factories import ProjectFactory
from tests.labeling.queue_helpers import lease, prompt_with_candidates, submit
from tests.training.helpers import make_candidates, make_prompt, rank
from training.models import DatasetSnapshot
from training.snapshots import (
    SnapshotFilters,
    SplitSettings,
    annotator_pseudonym,
    prompt_split,
    snapshot_create,
    snapshot_read_header,
    snapshot_read_rows,
    snapshot_spec_clean,
    snapshot_verify,
)

pytestmark = pytest.mark.django_db


def _rows(snapshot):
    return list(snapshot_read_rows(snapshot=snapshot))


def _create(project, user=None, **spec):
    filters, split = snapshot_spec_clean(spec)
    return snapshot_create(user=user, project=project, filters=filters, split=split)


def test_the_same_labels_give_the_same_hash_and_the_existing_snapshot(labelled):
    first, created = snapshot_create(user=labelled.admin, project=labelled.project)
    second, created_again = snapshot_create(user=labelled.admin, project=labelled.project)
    assert created and not created_again
    assert first.pk == second.pk and DatasetSnapshot.objects.count() == 1
    assert len(first.sha256) == 64
    # The name is the hash of the file's exact bytes.
    assert hashlib.sha256(first.file_path.read_bytes()).hexdigest() == first.sha256
    assert first.file_path.name == f"{first.sha256}.jsonl"
    assert snapshot_verify(snapshot=first)


def test_a_new_label_gives_a_new_hash_and_the_old_file_is_untouched(labelled, make_user):
    old, _ = snapshot_create(user=labelled.admin, project=labelled.project)
    before = old.file_path.read_bytes()
    rank(labelled.prompt, make_user(), [[labelled.b], [labelled.a], [labelled.c], [labelled.d]])
    new, created = snapshot_create(user=labelled.admin, project=labelled.project)
    assert created and new.sha256 != old.sha256
    assert old.file_path.read_bytes() == before
    assert not os.access(old.file_path, os.W_OK) or os.geteuid() == 0  # read-only (root ignores modes)
    assert oct(old.file_path.stat().st_mode & 0o777) == oct(0o444)
    assert new.counts["rankings"] == 2 and old.counts["rankings"] == 1


def test_a_label_submitted_through_the_queue_changes_the_hash_and_a_rejection_changes_it_back(make_user):
    project = ProjectFactory(overlap=2)
    prompt_with_candidates(project, n=4)
    admin, reviewer, annotator = make_user("admin"), make_user("reviewer"), make_user()
    empty, _ = snapshot_create(user=admin, project=project)
    task, _ = submit(annotator, lease(annotator, project, kinds="rank"))
    labelled, _ = snapshot_create(user=admin, project=project)
    assert labelled.sha256 != empty.sha256 and labelled.counts["rankings"] == 1
    review.label_reject(user=reviewer, label=task.label, reason="Ranked at random.")
    # A rejected label does not count: the snapshot is the unlabelled one again.
    again, created = snapshot_create(user=admin, project=project)
    assert again.sha256 == empty.sha256 and not created


def test_the_row_holds_everything_of_the_prompt(labelled):
    snapshot, _ = snapshot_create(user=labelled.admin, project=labelled.project)
    header = snapshot_read_header(snapshot=snapshot)
    assert header["format"] == "rlhf-studio-snapshot" and header["project_id"] == labelled.project.pk
    [row] = _rows(snapshot)
    a, b, c, d = labelled.a, labelled.b, labelled.c, labelled.d
    assert row["prompt_id"] == labelled.prompt.pk
    assert row["messages"] == [{"role": "user", "content": "Name a primary colour."}]
    assert [x["id"] for x in row["candidates"]] == [a, b, c, d]
    assert row["candidates"][0]["generation"] == {"temperature": 0.7, "seed": 0, "strategy": "plain"}
    [label] = row["rankings"]
    assert label["ranking"] == [[a], [b, c], [d]]
    assert label["ratings"] == {str(a): 7, str(b): 5, str(c): 5, str(d): 1}
    assert label["flags"] == {str(d): ["hallucination"]}
    assert label["shown_order"] == [c, a, d, b]
    assert label["annotator"] == annotator_pseudonym(labelled.annotator.pk)
    assert labelled.annotator.username not in json.dumps(row)
    assert row["consensus"]["ranking"] == [[a], [b, c], [d]] and row["consensus"]["labels"] == [label["id"]]
    assert row["demonstrations"][0]["text"] == "Red, blue and yellow are primary colours."
    assert row["split"] in ("train", "validation")
    assert snapshot.counts == {"prompts": 1, "demonstrations": 1, "candidates": 4, "rankings": 1, "annotators": 1,
                               "consensus": 1, "consensus_pairs": 5, "annotator_pairs": 5, "imported_prompts": 0}


def test_lines_are_canonical_json_sorted_by_prompt_id(labelled, make_user):
    for i in range(3):
        p = make_prompt(labelled.project, f"Question {i}?")
        ids = [c.pk for c in make_candidates(p, ["x", "y"])]
        rank(p, labelled.annotator, [[ids[1]], [ids[0]]])
    snapshot, _ = snapshot_create(user=None, project=labelled.project)
    lines = snapshot.file_path.read_bytes().decode().splitlines()
    for line in lines:
        assert line == json.dumps(json.loads(line), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    ids = [json.loads(line)["prompt_id"] for line in lines[1:]]
    assert ids == sorted(ids) and len(ids) == 4


def test_consensus_matches_labeling_stats(make_user):
    project = ProjectFactory()
    annotators = [make_user() for _ in range(3)]
    orders = [[0, 1, 2, 3], [1, 0, 2, 3], [0, 2, 1, 3]]
    for n in range(4):
        p = make_prompt(project, f"Prompt {n}")
        ids = [c.pk for c in make_candidates(p, ["a", "b", "c", "d"])]
        for who, order in zip(annotators, orders):
            rank(p, who, [[ids[i]] for i in order[n % 2:] + order[:n % 2]])
    # A later label by the same annotator replaces their earlier one in the consensus.
    rank(p, annotators[0], [[ids[3]], [ids[2]], [ids[1]], [ids[0]]])
    snapshot, _ = snapshot_create(user=None, project=project)
    expected = stats.project_consensus(project=project)
    assert {r["prompt_id"]: r["consensus"]["ranking"] for r in _rows(snapshot)} == expected


def test_split_is_deterministic_by_content_and_disjoint(make_user):
    project = ProjectFactory()
    for n in range(200):
        make_prompt(project, f"Prompt number {n}")
    make_prompt(project, "Prompt number 7")  # a duplicate of a prompt's content, other id
    split = SplitSettings(validation_fraction=0.25, seed=3)
    first, _ = _create(project, validation_fraction=0.25, split_seed=3)
    rows = _rows(first)
    sides = {r["prompt_id"]: r["split"] for r in rows}
    assert set(sides.values()) == {"train", "validation"}
    assert len(sides) == len(rows) == 201  # one row, hence one side, per prompt
    assert first.split["train"] + first.split["validation"] == 201
    assert 20 <= first.split["validation"] <= 80
    by_content = {}
    for r in rows:
        by_content.setdefault(r["content_hash"], set()).add(r["split"])
        assert r["split"] == prompt_split(content_hash=r["content_hash"], settings=split)
    assert all(len(s) == 1 for s in by_content.values())  # duplicates land on the same side
    # Another seed draws another split; the same seed the same one.
    other, _ = _create(project, validation_fraction=0.25, split_seed=4)
    assert {r["prompt_id"]: r["split"] for r in _rows(other)} != sides
    assert _create(project, validation_fraction=0.25, split_seed=3)[0].pk == first.pk


def test_filter_exclude_flagged_candidates_removes_them_from_rankings(labelled):
    from labeling.models import Candidate

    Candidate.objects.filter(pk=labelled.b).update(safety_flags=[{"check": "pii.email", "label": "pii",
                                                                   "detail": "email address j***@x.org"}])
    snapshot, _ = _create(labelled.project, exclude_flagged_candidates=True)
    [row] = _rows(snapshot)
    a, c, d = labelled.a, labelled.c, labelled.d
    assert [x["id"] for x in row["candidates"]] == [a, c, d]
    assert row["rankings"][0]["ranking"] == [[a], [c], [d]]
    assert str(labelled.b) not in row["rankings"][0]["ratings"]
    assert labelled.b not in row["rankings"][0]["shown_order"]
    assert row["consensus"]["ranking"] == [[a], [c], [d]]
    assert snapshot.filters["exclude_flagged_candidates"] is True
    # The unfiltered snapshot keeps the flagged candidate, marked.
    plain, _ = _create(labelled.project)
    assert plain.sha256 != snapshot.sha256
    assert _rows(plain)[0]["candidates"][1]["safety_flags"][0]["label"] == "pii"


def test_filter_exclude_flagged_labels(labelled, make_user):
    clean = rank(labelled.prompt, make_user(), [[labelled.a], [labelled.b], [labelled.c], [labelled.d]])
    rank(labelled.prompt, make_user(), [[labelled.a, labelled.b, labelled.c, labelled.d]], all_bad=True)
    snapshot, _ = _create(labelled.project, exclude_flagged_labels=True)
    [row] = _rows(snapshot)
    assert [r["id"] for r in row["rankings"]] == [clean.pk]  # the flagging and the all-bad labels are out


def test_filter_exclude_imported(labelled, make_user):
    imported = make_prompt(labelled.project, "Imported question", source=Source.IMPORTED, source_format="fgrlhf",
                           external_id="q1")
    ids = [c.pk for c in make_candidates(imported, ["p", "q"])]
    rank(imported, make_user(), [[ids[0]], [ids[1]]], source=Source.IMPORTED)
    rank(labelled.prompt, make_user(), [[labelled.d], [labelled.a, labelled.b, labelled.c]], source=Source.IMPORTED)
    everything, _ = _create(labelled.project)
    assert everything.counts["imported_prompts"] == 1 and everything.sources == {"fgrlhf": 1}
    assert everything.counts["rankings"] == 3
    written, _ = _create(labelled.project, exclude_imported=True)
    rows = _rows(written)
    assert [r["prompt_id"] for r in rows] == [labelled.prompt.pk]
    assert [r["source"] for r in rows[0]["rankings"]] == ["written"]
    assert written.sources == {}


def test_filter_min_agreement(make_user):
    project = ProjectFactory()
    one, two, three = make_user(), make_user(), make_user()
    agree = make_prompt(project, "Agreed")
    x = [c.pk for c in make_candidates(agree, ["a", "b", "c"])]
    rank(agree, one, [[x[0]], [x[1]], [x[2]]])
    rank(agree, two, [[x[0]], [x[1]], [x[2]]])
    disagree = make_prompt(project, "Disputed")
    y = [c.pk for c in make_candidates(disagree, ["a", "b", "c"])]
    rank(disagree, one, [[y[0]], [y[1]], [y[2]]])
    rank(disagree, two, [[y[2]], [y[1]], [y[0]]])
    alone = make_prompt(project, "Ranked once")
    z = [c.pk for c in make_candidates(alone, ["a", "b"])]
    rank(alone, three, [[z[0]], [z[1]]])
    snapshot, _ = _create(project, min_agreement=0.5)
    rows = {r["messages"][0]["content"]: r for r in _rows(snapshot)}
    assert rows["Agreed"]["agreement"] == 1.0 and len(rows["Agreed"]["rankings"]) == 2
    assert rows["Disputed"]["agreement"] == 0.0 and rows["Disputed"]["rankings"] == []
    assert rows["Disputed"]["consensus"] is None
    assert rows["Ranked once"]["agreement"] is None and rows["Ranked once"]["rankings"] == []
    assert snapshot.counts["rankings"] == 2


def test_filter_date_range(labelled, make_user):
    old = rank(labelled.prompt, make_user(), [[labelled.d], [labelled.c], [labelled.b], [labelled.a]])
    Ranking.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=30))
    week_ago = (timezone.now() - timedelta(days=7)).date().isoformat()
    recent, _ = _create(labelled.project, created_from=week_ago)
    assert [r["id"] for r in _rows(recent)[0]["rankings"]] == [labelled.ranking.pk]
    until, _ = _create(labelled.project, created_to=week_ago)
    assert [r["id"] for r in _rows(until)[0]["rankings"]] == [old.pk]
    assert until.filters["created_to"].startswith((timezone.now() - timedelta(days=6)).date().isoformat())


def test_bad_filters_are_refused():
    with pytest.raises(ValidationFailed):
        snapshot_spec_clean({"min_agreement": 2})
    with pytest.raises(ValidationFailed):
        snapshot_spec_clean({"created_from": "yesterday"})
    with pytest.raises(ValidationFailed):
        snapshot_spec_clean({"created_to": "2026-02-30"})
    with pytest.raises(ValidationFailed):
        snapshot_spec_clean({"exclude_everything": True})
    with pytest.raises(ValidationFailed):
        snapshot_spec_clean({"created_from": "2026-02-01", "created_to": "2026-01-01"})
    with pytest.raises(ValidationFailed):
        snapshot_spec_clean({"validation_fraction": 1})
    filters, split = snapshot_spec_clean({"exclude_imported": "true", "split_seed": "5"})
    assert filters == SnapshotFilters(exclude_imported=True) and split == SplitSettings(seed=5)


def test_only_admins_create_snapshots(labelled, make_user):
    for role in ("annotator", "reviewer"):
        with pytest.raises(PermissionDeniedError):
            snapshot_create(user=make_user(role), project=labelled.project)
    assert DatasetSnapshot.objects.count() == 0


def test_the_same_labels_in_another_project_have_another_hash(make_user):
    first, _ = snapshot_create(user=None, project=ProjectFactory())
    second, created = snapshot_create(user=None, project=ProjectFactory())
    assert created and first.sha256 != second.sha256  # the header names the project


def test_a_lost_file_is_detected(labelled):
    snapshot, _ = snapshot_create(user=None, project=labelled.project)
    snapshot.file_path.chmod(0o644)
    snapshot.file_path.write_text("tampered\n")
    assert not snapshot_verify(snapshot=snapshot)


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_as_in_production(make_user):
    """No test transaction around it: on PostgreSQL the four queries then run in their own
    REPEATABLE READ READ ONLY transaction (server-side cursors inside it)."""
    from django.db import connection

    from tests.training.helpers import build_labelled_project

    labelled = build_labelled_project(make_user)
    assert not connection.in_atomic_block
    first, created = snapshot_create(user=None, project=labelled.project)
    second, again = snapshot_create(user=None, project=labelled.project)
    assert created and not again and first.sha256 == second.sha256
    assert first.counts["rankings"] == 1 and not connection.in_atomic_block


# --- Pinned bytes: a hand-built project whose every id and time is fixed ------------------------
# The snapshot's sha256 is its identity: a model names the snapshot it was trained on by it. So
# the bytes of a snapshot must not change when the code that writes it does (only a new
# SNAPSHOT_SCHEMA_VERSION may change them). These tests pin the exact hashes of snapshots of
# labels with fixed ids and times, built to reach every corner of the canonical encoding:
# non-ASCII and astral text, escapes and control characters, U+2028, floats that print with an
# exponent, ties, gold trust weights, rejected, imported, flagged and dated labels, documents,
# conversations, demonstrations without an author, candidates with a model. The same hash is
# expected on SQLite and PostgreSQL.

PINNED_ID = 7_100_000  # far above what the sequences hand out in a test run
AWKWARD = "Crème brûlée — 日本語 🙂 \u2028 line\nnext\ttab \"quoted\" back\\slash \x01\x1f\x7f </script>"


def _at(day: int, second: int = 0):
    from datetime import datetime, timezone as dt_timezone

    return datetime(2026, 1, day, 3, 4, second, 678901, tzinfo=dt_timezone.utc)


def _pinned(table, pk: int, moment=None, /, **fields):
    """Create a row with a fixed id and, when it has one, a fixed created_at (auto_now_add
    ignores what is passed to create, so it is set afterwards)."""
    row = table.objects.create(pk=PINNED_ID + pk, **fields)
    if moment is not None:
        table.objects.filter(pk=row.pk).update(created_at=moment)
    return row


def build_pinned_project():
    from django.contrib.auth import get_user_model

    from labeling.models import Candidate, Demonstration, GoldRanking, LabelReview, Project, Prompt
    from labeling.services import prompt_content_hash
    from modelhub.models import ModelArtifact

    user = get_user_model()
    one, two, three, reviewer = (_pinned(user, n, username=f"pinned{n}") for n in range(1, 5))
    project = _pinned(Project, 1, name="Pinned", slug="pinned-bytes")
    model = _pinned(ModelArtifact, 1, name="pinned-policy-ß", path="/models/pinned")

    def prompt(pk, day, messages, *, documents=(), **fields):
        documents = list(documents)
        return _pinned(Prompt, pk, _at(day), project=project, messages=messages, documents=documents,
                       content_hash=prompt_content_hash(messages=messages, documents=documents), **fields)

    def candidates(p, first_pk, texts, **fields):
        return [_pinned(Candidate, first_pk + i, None, prompt=p, text=t, source=Source.GENERATED,
                        generation={"temperature": [0.7, 1.0, 1e-07, 2.5e-05][i % 4], "seed": i,
                                    "top_p": 0.95, "strategy": "plain", "note": AWKWARD if i == 0 else ""},
                        **fields)
                for i, t in enumerate(texts)]

    def ranking(pk, day, p, who, groups, **fields):
        ids = [c for g in groups for c in g]
        fields.setdefault("ratings", {str(c): 7 - 2 * g for g, group in enumerate(groups) for c in group})
        return _pinned(Ranking, pk, _at(day, pk % 60), prompt=p, annotator=who, ranking=groups,
                       shown_order=fields.pop("shown_order", sorted(ids)), **fields)

    # 1: an instruction with documents and awkward text, three annotators (a tie, a later label
    # replacing an earlier one, a rejected label), demonstrations with and without an author.
    p1 = prompt(1, 2, [{"role": "system", "content": "Réponds en français."},
                       {"role": "user", "content": AWKWARD}],
                documents=[{"title": "Doc ✓", "text": "Les couleurs primaires…"}, {"text": "Untitled"}])
    a, b, c, d = (x.pk for x in candidates(p1, 11, ["Rouge.", "Bleu 🙂", AWKWARD, "Bananes."], model=model))
    ranking(21, 3, p1, one, [[a], [b, c], [d]], flags={str(d): ["hallucination"]}, comment=AWKWARD,
            shown_order=[c, a, d, b], pairwise=[[a, b, "A"], [c, d, "B"]])
    ranking(22, 4, p1, two, [[b], [a], [c], [d]], ratings={str(a): 6, str(b): 7, str(c): 3.5, str(d): 1})
    ranking(23, 5, p1, two, [[a], [b], [d], [c]])  # two's later label: it counts, 22 does not
    rejected = ranking(24, 5, p1, three, [[d], [c], [b], [a]])
    _pinned(LabelReview, 1, None, ranking=rejected, reviewer=reviewer, reason="Reversed.")
    _pinned(Demonstration, 1, _at(3), prompt=p1, text="Rouge, bleu et jaune. " + AWKWARD, author=one)
    _pinned(Demonstration, 2, _at(9), prompt=p1, text="Imported answer.", author=None, source=Source.IMPORTED,
            external_id="d-1")
    # 2: a gold prompt (trust weights become non-prior floats), a flagged candidate, all-bad.
    p2 = prompt(2, 3, [{"role": "user", "content": "Name a prime."}])
    e, f, g = (x.pk for x in candidates(p2, 31, ["Two.", "Nine.", "Seven."]))
    Candidate.objects.filter(pk=f).update(safety_flags=[{"check": "pii.email", "label": "pii", "detail": "j***@x"}])
    _pinned(GoldRanking, 1, _at(2), prompt=p2, ranking=[[e, g], [f]], created_by=reviewer)
    ranking(41, 6, p2, one, [[e], [g], [f]])
    ranking(42, 6, p2, two, [[f], [e, g]])
    ranking(43, 7, p2, three, [[e, g, f]], all_bad=True, ratings={})
    # 3: a conversation, never ranked. 4: an imported prompt with an imported ranking.
    prompt(3, 4, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                  {"role": "user", "content": "Tell me a joke — en español, por favor."}], kind="conversation")
    p4 = prompt(4, 8, [{"role": "user", "content": "Imported question"}], source=Source.IMPORTED,
                source_format="fgrlhf", external_id="q-1")
    h, i = (x.pk for x in candidates(p4, 51, ["p", "q"]))
    ranking(61, 8, p4, three, [[i], [h]], source=Source.IMPORTED, external_id="r-1")
    return project


PINNED_SHA256 = {
    "default": "54c8089e80857585e769cba409af45de22de0effa11e9e0a049db1664397731d",
    "filtered": "8076ad6cd2d9ef2eed8c2cf978fd4e678065153f42c61ac813505a0d113d8f7a",
}


@pytest.mark.parametrize("spec_name, spec", [
    ("default", {}),
    ("filtered", {"exclude_flagged_candidates": True, "exclude_flagged_labels": True, "min_agreement": 0.1,
                  "created_from": "2026-01-03", "created_to": "2026-01-07", "validation_fraction": 0.5,
                  "split_seed": 11}),
])
def test_pinned_snapshot_bytes(spec_name, spec):
    project = build_pinned_project()
    snapshot, _ = _create(project, **spec)
    data = snapshot.file_path.read_bytes()
    # Every line is still the canonical json.dumps of itself (split on \n only: str.splitlines
    # would also split at the U+2028 that json.dumps writes raw inside strings).
    assert data.endswith(b"\n")
    for line in data.decode().split("\n")[:-1]:
        assert line == json.dumps(json.loads(line), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert snapshot.sha256 == PINNED_SHA256[spec_name], data.decode()


# --- The canonical JSON codec: orjson where it writes (reads) what json does ---------------------

def _dumps(obj, **kwargs) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), **kwargs).encode()


def _awkward_floats() -> list[float]:
    import math
    import random

    rng = random.Random(7)
    floats = [0.0, -0.0, 0.1, 0.7, 1.0, 2.5, 1e-07, 2.5e-05, 1e15, 1e16, 1e17, 1e22, 1.5e300, 5e-324,
              float("nan"), float("inf"), float("-inf"), 9007199254740993.0, 1 / 3]
    for edge in (1e-4, 1e16):  # where repr() switches to an exponent, and either side of it
        floats += [edge, math.nextafter(edge, 0), math.nextafter(edge, math.inf), -edge]
    floats += [rng.random() * 10 ** rng.randint(-30, 30) for _ in range(3000)]
    floats += [rng.uniform(-1, 1) * 10 ** rng.randint(-8, 20) for _ in range(3000)]
    return floats


def test_canonical_line_writes_what_json_dumps_writes():
    from training.snapshots import canonical_line, json_bytes, mark_floats

    every_code_point = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    texts = [every_code_point[i:i + 4096] for i in range(0, len(every_code_point), 4096)]
    values = [
        texts,
        {"é": 1, "z": 2, "日本": 3, "🙂": 4, "\uffff": 5, "a": {"b": [True, False, None]}, "": []},
        [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**30],  # the last three: json writes them
        {"floats": _awkward_floats()},
        {"nested": [{"x": 1e-07}, [2.5e-05, [1e16, {"y": float("nan")}]]]},
    ]
    for value in values:
        marked = mark_floats(value)
        assert canonical_line(marked) == _dumps(value, sort_keys=True) + b"\n"
        assert json_bytes(marked) == _dumps(value)
    # Floats decoded with json_loads are marked as they enter.
    from training.snapshots import json_loads

    text = _dumps(_awkward_floats()).decode()
    assert canonical_line(json_loads(text)) == text.encode() + b"\n"


def test_snapshot_lines_read_as_json_loads_reads_them():
    from training.snapshots import snapshot_line_loads

    lines = [
        b'{"a":1,"b":[1.0,-0.0,0.7,2.5e-05,1e-07,1e+16,1.5e+300],"c":"\\u00e9\\u2028\\ud83d\\ude42"}\n',
        b'{"big":123456789012345678901234567890,"neg":-9223372036854775809,"edge":18446744073709551615}\n',
        b'{"max":9223372036854775807,"min":-9223372036854775808,"eighteen":999999999999999999}\n',
        b'[NaN,Infinity,-Infinity]\n',
        b'["\\ud800 a lone surrogate"]\n',
        _dumps({"floats": _awkward_floats()[:-10]}) + b"\n",  # no NaN: orjson reads these
    ]
    for line in lines:
        got, expected = snapshot_line_loads(line), json.loads(line)
        assert repr(got) == repr(expected)
        assert json.dumps(got) == json.dumps(expected)  # same types (int stays int) and values


def test_lines_json_wrote_are_counted_and_read_back_exactly(labelled):
    """orjson writes every line it can; the lines it refuses (an integer beyond 64 bits) are
    written by json and counted, and then every line is checked for long integers on reading."""
    first, _ = snapshot_create(user=None, project=labelled.project)
    assert first.json_fallback_lines == 0
    Candidate.objects.filter(pk=labelled.a).update(generation={"seed": 2**70, "temperature": 1e-07})
    second, _ = snapshot_create(user=None, project=labelled.project)
    assert second.json_fallback_lines == 1
    for snapshot in (first, second):
        with open(snapshot.file_path, "rb") as f:
            expected = [json.loads(line) for line in list(f)[1:]]
        got = _rows(snapshot)
        assert json.dumps(got) == json.dumps(expected)  # same values and types: ints stay ints
    seeds = [c["generation"].get("seed") for c in _rows(second)[0]["candidates"]]
    assert 2**70 in seeds and isinstance(seeds[seeds.index(2**70)], int)
    # A snapshot made before the count existed is read with the check on every line.
    DatasetSnapshot.objects.filter(pk=second.pk).update(json_fallback_lines=None)
    second.refresh_from_db()
    assert json.dumps(_rows(second)) == json.dumps(expected)


def test_postgresql_json_is_read_with_floats_marked():
    from training.snapshots import canonical_line, json_loads, postgresql_json_loads

    # As PostgreSQL writes numbers (numeric: never an exponent).
    texts = [
        '[1, 0.7, 1.0, "x", {"t": 0.95, "s": 3}]',
        '[0.0000001, -0.00002500, 0.0001, 12345678901234567.5, 10000000000000000.0]',
        '[123456789012345678901234567890, -9223372036854775809, 9223372036854775807]',
    ]
    for text in texts:
        got, expected = postgresql_json_loads(text), json_loads(text)
        assert repr(got) == repr(expected) and canonical_line(got) == canonical_line(expected)
        assert canonical_line(got) == _dumps(json.loads(text), sort_keys=True) + b"\n"


def test_preference_lines_with_exponent_margins_match_their_rows():
    """Margins that json writes with an exponent, computed from fractional ratings."""
    from training.exports.common import ExportOptions as Options, jsonl
    from training.exports.preference import encoded_preference_lines, preference_rows

    row = {"prompt_id": 1, "split": "train", "messages": [{"role": "user", "content": "Pick — ✓"}], "documents": [],
           "candidates": [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}, {"id": 3, "text": "c"}],
           "rankings": [{"id": 9, "annotator": "annotator-x", "ranking": [[1], [2], [3]],
                         "ratings": {"1": 5.00001, "2": 5.0, "3": 1e-07}}],
           "consensus": {"ranking": [[1], [2], [3]], "labels": [9]}}
    for conversational in (False, True):
        options = Options(labels="both")
        assembled = b"".join(encoded_preference_lines([row], options=options, conversational=conversational))
        encoded = b"".join(jsonl(r) for r in preference_rows([row], options=options, conversational=conversational))
        assert assembled == encoded and b"e-05" in assembled


def test_preference_lines_match_their_rows_for_any_ratings():
    """Random rows with ratings of every shape: integers for every candidate (the margins from
    rating sums), some candidates unrated, floats, bools and text (each pair on its own), none."""
    import random

    from training.exports.common import ExportOptions as Options, jsonl
    from training.exports.preference import encoded_preference_lines, preference_rows

    rng = random.Random(3)

    def rating(shape):
        return {"int": lambda: rng.randint(1, 7), "float": lambda: rng.choice([2.5, 5.00001, 1e-07, 3.0]),
                "odd": lambda: rng.choice([True, "7", None, 4])}[shape]()

    rows = []
    for prompt_id in range(1, 200):
        ids = rng.sample(range(1, 10_000), rng.randint(2, 5))
        labels = []
        for label_id in range(rng.randint(1, 4)):
            order = rng.sample(ids, len(ids))
            groups = [[order[0]]]
            for c in order[1:]:
                groups[-1].append(c) if rng.random() < 0.25 else groups.append([c])
            shape = rng.choice(["int", "int", "int", "float", "odd", "partial", "none"])
            rated = [] if shape == "none" else ids[:-1] if shape == "partial" else ids
            ratings = {str(c): rating("int" if shape == "partial" else shape) for c in rated}
            labels.append({"id": prompt_id * 10 + label_id, "annotator": f"annotator-{label_id}",
                           "ranking": groups, "ratings": ratings})
        used = rng.sample(labels, rng.randint(1, len(labels)))
        rows.append({"prompt_id": prompt_id, "split": rng.choice(["train", "validation"]),
                     "messages": [{"role": "user", "content": f"Pick {prompt_id}"}], "documents": [],
                     "candidates": [{"id": c, "text": f"answer {c}"} for c in ids], "rankings": labels,
                     "consensus": {"ranking": labels[0]["ranking"], "labels": [r["id"] for r in used]}})
    for labels in ("consensus", "annotators", "both"):
        for ties in (False, True):
            options = Options(labels=labels, ties=ties)
            assembled = b"".join(encoded_preference_lines(rows, options=options, conversational=False))
            encoded = b"".join(jsonl(r) for r in preference_rows(rows, options=options, conversational=False))
            assert assembled == encoded and assembled.count(b"\n") > 300


@pytest.mark.parametrize("where", ["row", "write"])
def test_a_failure_while_streaming_leaves_no_file_and_a_usable_connection(labelled, monkeypatch, where):
    """On PostgreSQL the rows come from one streamed query: a failure half-way (building a row,
    or writing one) must end it, release the connection and keep the caller's transaction."""
    _fail_half_way(labelled, monkeypatch, where)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["row", "write"])
def test_a_failure_while_streaming_outside_a_transaction(make_user, monkeypatch, where):
    """As in production: the snapshot's own transaction is rolled back, the connection answers."""
    from tests.training.helpers import build_labelled_project

    _fail_half_way(build_labelled_project(make_user), monkeypatch, where)


def _fail_half_way(labelled, monkeypatch, where):
    from labeling.models import Prompt
    from training import snapshots

    for i in range(3):
        p = make_prompt(labelled.project, f"Question {i}?")
        ids = [c.pk for c in make_candidates(p, ["x", "y"])]
        rank(p, labelled.annotator, [[ids[1]], [ids[0]]])
    calls = []
    real = snapshots.snapshot_prompt_row if where == "row" else snapshots.canonical_line_and_writer

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(snapshots, "snapshot_prompt_row" if where == "row" else "canonical_line_and_writer", failing)
    with pytest.raises(RuntimeError, match="boom") as failure:
        snapshot_create(user=None, project=labelled.project)
    assert failure.tb is not None  # the traceback, and the frames it holds, are still alive here
    assert list(snapshots.snapshot_dir().iterdir()) == []
    assert Prompt.objects.filter(project=labelled.project).count() == 4  # the connection still answers
    monkeypatch.undo()
    snapshot, created = snapshot_create(user=None, project=labelled.project)
    assert created and snapshot.counts["prompts"] == 4
