"""Every export format: it loads back with `datasets` and its rows round-trip to the labels.

The hand-built prompt (tests.training.helpers) has candidates a, b, c, d ranked
[[a], [b, c], [d]] with ratings a 7, b 5, c 5, d 1: its pairs are exactly (a, b), (a, c),
(a, d), (b, d), (c, d) with margins 2, 2, 6, 4, 4, and (b, c) is a tie.
"""
from __future__ import annotations

import csv
import io
import json
import tarfile
import types

import pytest

from labeling.models import Candidate, Demonstration, Source
from tests.training.helpers import make_candidates, make_prompt, rank
from training.exports import EXPORT_FORMATS, ExportOptions, export_expected_rows, export_stream
from training.snapshots import annotator_pseudonym, snapshot_create, snapshot_read_rows

pytestmark = pytest.mark.django_db


def export_to(tmp_path, snapshot, format_name, name=None, **options) -> tuple:
    export = export_stream(snapshot=snapshot, format_name=format_name,
                           options=ExportOptions.from_query({k: str(v) for k, v in options.items()}))
    path = tmp_path / (name or export.filename)
    with open(path, "wb") as out:
        for chunk in export.chunks:
            out.write(chunk)
    return path, export


def load_json(path, cache):
    import datasets

    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache)


@pytest.fixture
def snapshot(labelled):
    snap, _ = snapshot_create(user=labelled.admin, project=labelled.project)
    return snap


def test_every_format_is_registered():
    assert set(EXPORT_FORMATS) == {"sft", "preference", "preference-conversational", "ranking", "prompts",
                                   "openai-chat", "oasst", "hf", "csv"}


def test_preference_gives_exactly_the_untied_pairs_with_margins(labelled, snapshot, tmp_path, hf_cache):
    path, export = export_to(tmp_path, snapshot, "preference")
    assert isinstance(export.chunks, types.GeneratorType)  # streamed, not built in memory
    rows = load_json(path, hf_cache)
    l = labelled
    got = {(r["chosen_id"], r["rejected_id"]): r for r in rows}
    assert set(got) == {(l.a, l.b), (l.a, l.c), (l.a, l.d), (l.b, l.d), (l.c, l.d)}
    assert {k: v["margin"] for k, v in got.items()} == {(l.a, l.b): 2, (l.a, l.c): 2, (l.a, l.d): 6,
                                                        (l.b, l.d): 4, (l.c, l.d): 4}
    for (chosen, rejected), r in got.items():
        # One renderer for generation, training and exports: the HH transcript.
        assert r["prompt"] == "Human: Name a primary colour.\n\nAssistant:"
        assert (r["chosen"], r["rejected"]) == (l.texts[chosen], l.texts[rejected])
        assert r["prompt_id"] == l.prompt.pk and r["tie"] is False and r["label_source"] == "consensus"
    assert export_expected_rows(snapshot=snapshot, format_name="preference") == 5


def test_preference_from_annotators_and_with_ties(labelled, make_user, tmp_path, hf_cache):
    l = labelled
    second = make_user()
    rank(l.prompt, second, [[l.b], [l.a], [l.c], [l.d]], ratings={l.a: 6, l.b: 7, l.c: 3, l.d: 1})
    snap, _ = snapshot_create(user=None, project=l.project)
    path, _ = export_to(tmp_path, snap, "preference", labels="annotators")
    rows = load_json(path, hf_cache)
    assert len(rows) == 5 + 6
    mine = [r for r in rows if r["annotator"] == annotator_pseudonym(second.pk)]
    assert {(r["chosen_id"], r["rejected_id"]) for r in mine} == {
        (l.b, l.a), (l.b, l.c), (l.b, l.d), (l.a, l.c), (l.a, l.d), (l.c, l.d)}
    assert all(r["label_source"] == "annotator" and r["label_id"] is not None for r in rows)
    assert next(r for r in mine if (r["chosen_id"], r["rejected_id"]) == (l.b, l.a))["margin"] == 1
    # Both: consensus pairs too; the consensus margin averages the two labels' ratings.
    both, _ = export_to(tmp_path, snap, "preference", name="both.jsonl", labels="both")
    both_rows = load_json(both, hf_cache)
    consensus = [r for r in both_rows if r["label_source"] == "consensus"]
    assert len(both_rows) == len(rows) + len(consensus) and consensus
    ad = next(r for r in consensus if (r["chosen_id"], r["rejected_id"]) == (l.a, l.d))
    assert ad["margin"] == ((7 - 1) + (6 - 1)) / 2
    # Ties on request: the first label's (b, c) tie, flagged.
    ties, _ = export_to(tmp_path, snap, "preference", name="ties.jsonl", labels="annotators", ties=1)
    tied = [r for r in load_json(ties, hf_cache) if r["tie"]]
    assert [(r["chosen_id"], r["rejected_id"]) for r in tied] == [(l.b, l.c)]


def test_preference_conversational(labelled, snapshot, tmp_path, hf_cache):
    path, _ = export_to(tmp_path, snapshot, "preference-conversational")
    rows = load_json(path, hf_cache)
    assert len(rows) == 5
    r = next(r for r in rows if r["chosen_id"] == labelled.a and r["rejected_id"] == labelled.d)
    assert r["prompt"] == [{"role": "user", "content": "Name a primary colour."}]
    assert r["chosen"] == [{"role": "assistant", "content": "Red."}]
    assert r["rejected"] == [{"role": "assistant", "content": "Bananas."}]


def test_system_documents_and_turns_are_rendered_for_both_forms(labelled, tmp_path, hf_cache):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Capital of France?"}]
    p = make_prompt(labelled.project, "", messages=messages, documents=[{"title": "Atlas", "text": "Paris is..."}])
    x, y = (c.pk for c in make_candidates(p, ["Paris.", "Lyon."]))
    rank(p, labelled.annotator, [[x], [y]])
    snap, _ = snapshot_create(user=None, project=labelled.project)
    conv = load_json(export_to(tmp_path, snap, "preference-conversational", split="")[0], hf_cache)
    row = next(r for r in conv if r["prompt_id"] == p.pk)
    assert row["prompt"][0] == {"role": "system",
                                "content": "Be brief.\n\nReference documents:\n\n[1] Atlas\nParis is..."}
    assert row["prompt"][1:] == messages[1:]
    std = load_json(export_to(tmp_path, snap, "preference", name="std.jsonl")[0], hf_cache)
    text = next(r for r in std if r["prompt_id"] == p.pk)["prompt"]
    assert text.startswith("System: Be brief.") and "Human: Hi\n\nAssistant: Hello!" in text
    assert text.endswith("Human: Capital of France?\n\nAssistant:")


def test_sft(labelled, snapshot, tmp_path, hf_cache):
    rows = load_json(export_to(tmp_path, snapshot, "sft")[0], hf_cache)
    assert len(rows) == 1
    assert rows[0]["messages"] == [{"role": "user", "content": "Name a primary colour."},
                                   {"role": "assistant", "content": "Red, blue and yellow are primary colours."}]
    assert rows[0]["demonstration_id"] == labelled.demonstration.pk
    assert rows[0]["author"] == annotator_pseudonym(labelled.annotator.pk)


def test_ranking(labelled, snapshot, tmp_path, hf_cache):
    l = labelled
    rows = load_json(export_to(tmp_path, snapshot, "ranking")[0], hf_cache)
    [row] = rows
    assert [c["id"] for c in row["candidates"]] == [l.a, l.b, l.c, l.d]
    assert row["ranks"] == [0, 1, 1, 2]
    assert row["consensus"] == [[l.a], [l.b, l.c], [l.d]]
    [label] = row["annotator_rankings"]
    assert label["ratings"] == [7, 5, 5, 1]
    assert label["flags"] == [[], [], [], ["hallucination"]]
    assert label["ranking"] == [[l.a], [l.b, l.c], [l.d]] and label["shown_order"] == [l.c, l.a, l.d, l.b]
    assert json.loads(row["candidates"][0]["generation"])["temperature"] == 0.7


def test_prompts(labelled, snapshot, tmp_path, hf_cache):
    make_prompt(labelled.project, "Unlabelled prompt")
    snap, _ = snapshot_create(user=None, project=labelled.project)
    rows = load_json(export_to(tmp_path, snap, "prompts")[0], hf_cache)
    assert [r["prompt_text"] for r in rows] == ["Human: Name a primary colour.\n\nAssistant:",
                                               "Human: Unlabelled prompt\n\nAssistant:"]
    assert rows[0]["prompt"] == [{"role": "user", "content": "Name a primary colour."}]
    assert rows[0]["content_hash"] == labelled.prompt.content_hash


def test_openai_chat_has_only_messages_and_a_preference_layout(labelled, snapshot, tmp_path, hf_cache):
    path, _ = export_to(tmp_path, snapshot, "openai-chat")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == [{"messages": [{"role": "user", "content": "Name a primary colour."},
                                   {"role": "assistant", "content": "Red, blue and yellow are primary colours."}]}]
    assert len(load_json(path, hf_cache)) == 1
    pref, _ = export_to(tmp_path, snapshot, "openai-chat", name="pref.jsonl", rows="preference")
    rows = [json.loads(x) for x in pref.read_text().splitlines()]
    assert len(rows) == 5 and set(rows[0]) == {"input", "preferred_output", "non_preferred_output"}
    assert rows[0]["input"] == {"messages": [{"role": "user", "content": "Name a primary colour."}]}
    assert len(load_json(pref, hf_cache)) == 5


def test_oasst_message_trees(labelled, snapshot, tmp_path, hf_cache):
    l = labelled
    path, _ = export_to(tmp_path, snapshot, "oasst")
    [tree] = load_json(path, hf_cache)
    root = tree["prompt"]
    assert root["role"] == "prompter" and root["text"] == "Name a primary colour." and root["parent_id"] is None
    replies = {r["message_id"]: r for r in root["replies"]}
    assert {k: v["rank"] for k, v in replies.items() if v["synthetic"]} == {
        f"p{l.prompt.pk}-c{l.a}": 0, f"p{l.prompt.pk}-c{l.b}": 1, f"p{l.prompt.pk}-c{l.c}": 1,
        f"p{l.prompt.pk}-c{l.d}": 2}
    demo = replies[f"p{l.prompt.pk}-d{l.demonstration.pk}"]
    assert demo["synthetic"] is False and demo["rank"] is None and demo["parent_id"] == root["message_id"]
    worst = replies[f"p{l.prompt.pk}-c{l.d}"]
    assert worst["labels"]["hallucination"] == {"value": 1.0, "count": 1}
    assert worst["labels"]["quality"] == {"value": 0.0, "count": 1}
    assert tree["annotator_rankings"][0]["ranking"] == [[l.a], [l.b, l.c], [l.d]]


def test_oasst_trees_follow_the_conversation(labelled, tmp_path):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Tell a joke."}]
    p = make_prompt(labelled.project, "", messages=messages)
    make_candidates(p, ["Knock knock."])
    snap, _ = snapshot_create(user=None, project=labelled.project)
    path, _ = export_to(tmp_path, snap, "oasst")
    tree = [json.loads(x) for x in path.read_text().splitlines()][1]
    node = tree["prompt"]
    assert [node["role"], node["replies"][0]["role"], node["replies"][0]["replies"][0]["role"]] == [
        "prompter", "assistant", "prompter"]
    assert node["replies"][0]["replies"][0]["replies"][0]["text"] == "Knock knock."


def test_csv_has_one_row_per_label(labelled, snapshot, tmp_path, hf_cache):
    import datasets

    path, export = export_to(tmp_path, snapshot, "csv")
    assert export.media_type == "text/csv"
    table = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["label_type"] for r in table] == ["ranking", "demonstration"]
    ranking = table[0]
    l = labelled
    assert json.loads(ranking["ranking_json"]) == [[l.a], [l.b, l.c], [l.d]]
    assert ranking["ranking"] == f"{l.a} > {l.b} = {l.c} > {l.d}"
    assert json.loads(ranking["ratings_json"]) == {str(l.a): 7, str(l.b): 5, str(l.c): 5, str(l.d): 1}
    assert table[1]["demonstration"] == "Red, blue and yellow are primary colours."
    loaded = datasets.load_dataset("csv", data_files=str(path), split="train", cache_dir=hf_cache)
    assert len(loaded) == 2 and loaded[0]["label_id"] == l.ranking.pk


def _extract(path, into):
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    [root] = [p for p in into.iterdir() if p.is_dir()]
    return root


def test_hf_dataset_loads_from_disk_and_from_parquet_with_a_card(labelled, make_user, tmp_path, hf_cache):
    import datasets

    imported = make_prompt(labelled.project, "Imported q", source=Source.IMPORTED, source_format="fgrlhf",
                           external_id="1")
    ids = [c.pk for c in make_candidates(imported, ["u", "v"])]
    rank(imported, make_user(), [[ids[1]], [ids[0]]], source=Source.IMPORTED, ratings={ids[0]: 2, ids[1]: 6})
    snap, _ = snapshot_create(user=None, project=labelled.project)
    path, export = export_to(tmp_path, snap, "hf")
    assert export.media_type == "application/x-tar"
    root = _extract(path, tmp_path / "out")
    loaded = datasets.load_from_disk(str(root / "dataset"))
    assert set(loaded) <= {"train", "validation"} and loaded
    rows = [r for split in loaded.values() for r in split]
    assert len(rows) == 5 + 1
    assert {(r["chosen_id"], r["rejected_id"]) for r in rows if r["prompt_id"] == labelled.prompt.pk} == {
        (labelled.a, labelled.b), (labelled.a, labelled.c), (labelled.a, labelled.d), (labelled.b, labelled.d),
        (labelled.c, labelled.d)}
    assert next(r for r in rows if r["prompt_id"] == imported.pk)["margin"] == 4
    parquet = datasets.load_dataset("parquet", data_files={s: str(root / "data" / f"{s}.parquet")
                                                           for s in loaded}, cache_dir=hf_cache)
    assert sum(len(s) for s in parquet.values()) == 6
    # The card's YAML names the Parquet files, so the directory itself loads.
    by_card = datasets.load_dataset(str(root), cache_dir=hf_cache)
    assert set(by_card) == set(loaded) and sum(len(s) for s in by_card.values()) == 6
    card = (root / "README.md").read_text()
    assert snap.sha256 in card and "fgrlhf" in card and "Apache-2.0" in card
    assert "| prompts | 2 |" in card and "data/train.parquet" in card
    # The temporary build directory is gone once the stream is consumed.
    assert not any((tmp_path / "data" / "exports-tmp").iterdir())


@pytest.mark.parametrize("rows", ["preference-conversational", "sft", "prompts"])
def test_hf_other_row_kinds(labelled, snapshot, tmp_path, rows):
    import datasets

    path, _ = export_to(tmp_path, snapshot, "hf", rows=rows)
    root = _extract(path, tmp_path / "out")
    loaded = datasets.load_from_disk(str(root / "dataset"))
    total = sum(len(s) for s in loaded.values())
    assert total == {"preference-conversational": 5, "sft": 1, "prompts": 1}[rows]


def test_redaction_replaces_pii_in_every_text_and_leaves_the_snapshot_alone(labelled, tmp_path, hf_cache):
    Candidate.objects.filter(pk=labelled.a).update(text="Mail jane.doe@example.com or call +1 415-555-0123.")
    Demonstration.objects.filter(pk=labelled.demonstration.pk).update(text="Card 4111 1111 1111 1111 works.")
    snap, _ = snapshot_create(user=None, project=labelled.project)
    rows = load_json(export_to(tmp_path, snap, "preference", redact=1)[0], hf_cache)
    chosen = next(r for r in rows if r["chosen_id"] == labelled.a)["chosen"]
    assert chosen == "Mail [EMAIL] or call [PHONE]."
    sft = load_json(export_to(tmp_path, snap, "sft", name="sft.jsonl", redact=1)[0], hf_cache)
    assert sft[0]["messages"][-1]["content"] == "Card [CARD_NUMBER] works."
    raw = next(snapshot_read_rows(snapshot=snap))
    assert "jane.doe@example.com" in raw["candidates"][0]["text"]
    plain = load_json(export_to(tmp_path, snap, "preference", name="plain.jsonl")[0], hf_cache)
    assert "jane.doe@example.com" in next(r for r in plain if r["chosen_id"] == labelled.a)["chosen"]


def test_split_option_keeps_one_side(make_user, tmp_path):
    from tests.factories import ProjectFactory

    project = ProjectFactory()
    annotator = make_user()
    for n in range(40):
        p = make_prompt(project, f"Q{n}")
        x, y = (c.pk for c in make_candidates(p, ["a", "b"]))
        rank(p, annotator, [[x], [y]])
    snap, _ = snapshot_create(user=None, project=project)
    sides = {}
    for side in ("train", "validation"):
        path, _ = export_to(tmp_path, snap, "preference", name=f"{side}.jsonl", split=side)
        sides[side] = {json.loads(x)["prompt_id"] for x in path.read_text().splitlines()}
        assert all(json.loads(x)["split"] == side for x in path.read_text().splitlines())
    assert sides["train"] and sides["validation"] and not sides["train"] & sides["validation"]
    assert len(sides["train"]) + len(sides["validation"]) == 40


def test_exports_are_reproducible(labelled, snapshot, tmp_path):
    for name in ("preference", "ranking", "oasst", "csv", "sft"):
        first = export_to(tmp_path, snapshot, name, name=f"1-{name}")[0].read_bytes()
        second = export_to(tmp_path, snapshot, name, name=f"2-{name}")[0].read_bytes()
        assert first == second and first


@pytest.mark.parametrize("conversational", [False, True])
def test_preference_lines_are_assembled_exactly_as_their_rows_encode(labelled, make_user, conversational):
    from training.exports.common import jsonl
    from training.exports.preference import encoded_preference_lines, preference_rows

    rank(labelled.prompt, make_user(), [[labelled.d], [labelled.c, labelled.a], [labelled.b]],
         ratings={labelled.a: 3, labelled.b: 2})
    p = make_prompt(labelled.project, "Ünïcode “quotes” and \\ backslashes\n", documents=[{"title": "t", "text": "x"}])
    ids = [c.pk for c in make_candidates(p, ['He said "hi"', "naïve ✓"])]
    rank(p, labelled.annotator, [[ids[1]], [ids[0]]])
    snap, _ = snapshot_create(user=None, project=labelled.project)
    for labels in ("consensus", "annotators", "both"):
        options = ExportOptions(labels=labels, ties=True)
        rows = list(snapshot_read_rows(snapshot=snap))
        assembled = b"".join(encoded_preference_lines(rows, options=options, conversational=conversational))
        encoded = b"".join(jsonl(r) for r in preference_rows(rows, options=options, conversational=conversational))
        assert assembled == encoded and assembled
