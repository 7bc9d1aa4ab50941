"""Imports: the three formats, idempotency, bad rows with their positions, and permissions."""
import hashlib
import io
import json
from pathlib import Path

import pytest

from labeling.importers import IMPORT_FORMATS, import_run_in_process
from labeling.importers import fgrlhf as fgrlhf_module
from labeling.importers import readers as readers_module
from labeling.importers import run as run_module
from labeling.importers.fgrlhf import PREFERENCE_OUTCOMES, fgrlhf_preference_judgements
from labeling.importers.ranking import check_tie_groups, copeland_tie_groups
from labeling.importers.readers import HashingReader, json_list_items
from labeling.models import Candidate, Demonstration, ImportRun, Prompt, Ranking, Source
from studio.errors import PermissionDeniedError, ValidationFailed
from studio.services import imported_annotator

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SELF_INSTRUCT = FIXTURES / "self_instruct_seed_tasks.jsonl"
FGRLHF_SLICE = FIXTURES / "fgrlhf_qa_dev_feedback_slice.json"


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    """Uploads go to this test's own data directory."""
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


def run_import(project, user, data, fmt, filename="upload"):
    if isinstance(data, (list, dict)):
        data = json.dumps(data)
    if isinstance(data, str):
        data = data.encode()
    return import_run_in_process(project=project, user=user, stream=io.BytesIO(data), filename=filename,
                                 format=fmt)


def jsonl(*rows):
    return "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n"


def fgrlhf_item(preference, *, question="Who wrote it?", corrected="Corrected answer."):
    return {
        "question": question,
        "passages": [["A title", "First sentence.", "Second sentence."]],
        "gold": "Gold answer.",
        **{f"prediction {n}": f"Prediction {n}." for n in range(1, 5)},
        "preference": preference,
        "feedback": {"errors": [], "missing-info": [], "corrected-prediction": corrected},
    }


def ranking_as_predictions(ranking: Ranking) -> list[list[int]]:
    """A stored ranking as groups of prediction numbers (1..4), for readable assertions."""
    number = {c.pk: c.generation["prediction"] for c in ranking.prompt.candidates.all()}
    return [[number[pk] for pk in group] for group in ranking.ranking]


def test_formats_are_registered():
    assert sorted(IMPORT_FORMATS) == ["fgrlhf", "jsonl", "self-instruct"]


# --- self-instruct ------------------------------------------------------------------------------

@pytest.mark.django_db
def test_self_instruct_full_file_creates_one_prompt_and_demonstration_per_task(project, admin_user):
    data = SELF_INSTRUCT.read_bytes()

    run = run_import(project, admin_user, data, "self-instruct", filename="seed.jsonl")

    assert run.status == ImportRun.Status.SUCCEEDED
    assert run.errors == []
    assert run.counts == {"rows": 175, "prompts": 175, "demonstrations": 175, "candidates": 0, "rankings": 0,
                          "unchanged": 0}
    assert run.file_sha256 == hashlib.sha256(data).hexdigest()
    assert (run.filename, run.format, run.created_by) == ("seed.jsonl", "self-instruct", admin_user)
    assert Prompt.objects.filter(project=project).count() == 175
    assert Demonstration.objects.filter(prompt__project=project).count() == 175

    first = Prompt.objects.get(project=project, external_id="seed_task_0")
    assert (first.source, first.source_format, first.kind) == (Source.IMPORTED, "self-instruct", "instruction")
    assert first.created_by == admin_user
    assert first.messages == [{"role": "user", "content": (
        "Is there anything I can eat for a breakfast that doesn't include eggs, yet includes protein, "
        "and has roughly 700-1000 calories?")}]
    demo = first.demonstrations.get()
    assert demo.text.startswith("Yes, you can have 1 oatmeal banana protein shake")
    assert (demo.source, demo.author, demo.external_id) == (Source.IMPORTED, imported_annotator(), "seed_task_0")
    # A task with an input: the instruction, a blank line, then the input.
    second = Prompt.objects.get(project=project, external_id="seed_task_1")
    assert second.question == "What is the relation between the given pairs?\n\nNight : Day :: Right : Left"


@pytest.mark.django_db
def test_self_instruct_imported_twice_creates_nothing_new(project, admin_user):
    data = SELF_INSTRUCT.read_bytes()
    run_import(project, admin_user, data, "self-instruct")

    again = run_import(project, admin_user, data, "self-instruct")

    assert again.status == ImportRun.Status.SUCCEEDED
    assert again.counts == {"rows": 175, "prompts": 0, "demonstrations": 0, "candidates": 0, "rankings": 0,
                            "unchanged": 175}
    assert Prompt.objects.filter(project=project).count() == 175
    assert Demonstration.objects.filter(prompt__project=project).count() == 175
    assert ImportRun.objects.filter(project=project).count() == 2


@pytest.mark.django_db
def test_self_instruct_instances_ids_and_empty_outputs(project, admin_user):
    row_without_id = {"instruction": "Sort the words.", "instances": [{"input": "b a", "output": "a b"}]}
    data = jsonl(
        {"id": "t1", "instruction": "Name a colour.", "instances": [
            {"input": "", "output": "Red."},
            {"input": "  ", "output": "Blue."},
            {"input": "Warm ones only", "output": ""},
        ]},
        row_without_id,
    )

    run = run_import(project, admin_user, data, "self-instruct")

    assert run.counts["prompts"] == 4 and run.counts["demonstrations"] == 3
    by_id = {p.external_id: p for p in Prompt.objects.filter(project=project)}
    sha = hashlib.sha256(json.dumps(row_without_id, sort_keys=True).encode()).hexdigest()
    assert set(by_id) == {"t1", "t1#1", "t1#2", sha}
    assert by_id["t1"].question == "Name a colour."
    assert by_id["t1#1"].question == "Name a colour."  # a blank input adds nothing
    assert by_id["t1#2"].question == "Name a colour.\n\nWarm ones only"
    assert not by_id["t1#2"].demonstrations.exists()  # an empty output is no demonstration
    assert by_id["t1#1"].demonstrations.get().text == "Blue."


@pytest.mark.django_db
def test_self_instruct_instruction_with_input_over_the_limit(project, admin_user, settings):
    settings.STUDIO_MAX_PROMPT_CHARS = 50
    data = jsonl(
        {"id": "ok", "instruction": "Say hi.", "instances": [{"input": "", "output": "Hi."}]},
        {"id": "long", "instruction": "x" * 30, "instances": [{"input": "", "output": "y"},
                                                              {"input": "z" * 30, "output": "y"}]},
    )

    run = run_import(project, admin_user, data, "self-instruct")

    assert run.result == "partial"
    assert run.errors == [{"line": 2, "message": "instances[1]: the instruction with its input is 62 characters "
                                                 "long; the limit is 50."}]
    assert list(Prompt.objects.filter(project=project).values_list("external_id", flat=True)) == ["ok"]


# --- fgrlhf -------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_fgrlhf_slice_creates_prompts_candidates_rankings_and_demonstrations(project, admin_user):
    items = json.loads(FGRLHF_SLICE.read_text())

    run = run_import(project, admin_user, FGRLHF_SLICE.read_bytes(), "fgrlhf")

    assert run.status == ImportRun.Status.SUCCEEDED, run.errors
    # Two of the five items have no corrected prediction, so no demonstration.
    assert run.counts == {"rows": 5, "prompts": 5, "demonstrations": 3, "candidates": 20, "rankings": 5,
                          "unchanged": 0}
    prompt = Prompt.objects.get(project=project, messages=[{"role": "user", "content": items[0]["question"]}])
    assert (prompt.source, prompt.source_format, len(prompt.external_id)) == (Source.IMPORTED, "fgrlhf", 64)
    assert prompt.documents == [{"title": title, "text": " ".join(sentences)}
                                for title, *sentences in items[0]["passages"]]
    assert prompt.documents[0]["title"] == "Bloom (Troye Sivan album)"

    candidates = list(prompt.candidates.order_by("id"))
    assert [c.external_id for c in candidates] == ["prediction 1", "prediction 2", "prediction 3", "prediction 4"]
    assert [c.text for c in candidates] == [items[0][f"prediction {n}"] for n in range(1, 5)]
    assert [c.generation for c in candidates] == [{"source": "fgrlhf", "prediction": n} for n in range(1, 5)]
    assert all(c.source == Source.IMPORTED for c in candidates)

    ranking = prompt.rankings.get()
    annotator = imported_annotator()
    assert ranking.annotator == annotator and not annotator.is_active
    assert (ranking.source, ranking.external_id) == (Source.IMPORTED, "fgrlhf-preference")
    # preference [0, 1, 2, 1, 0, 2] over (1,2) (1,3) (1,4) (2,3) (2,4) (3,4), verbatim:
    ids = [c.pk for c in candidates]
    assert ranking.pairwise == [[ids[0], ids[1], "tie"], [ids[0], ids[2], "a"], [ids[0], ids[3], "b"],
                                [ids[1], ids[2], "a"], [ids[1], ids[3], "tie"], [ids[2], ids[3], "b"]]
    # Copeland scores: p4 2.5, p2 2, p1 1.5, p3 0.
    assert ranking_as_predictions(ranking) == [[4], [2], [1], [3]]
    assert prompt.demonstrations.get().text == items[0]["feedback"]["corrected-prediction"]
    assert prompt.demonstrations.get().author == annotator

    # An item without passages, with all six judgements ties and no correction.
    tied = Prompt.objects.get(project=project, messages=[{"role": "user", "content": items[4]["question"]}])
    assert tied.documents == []
    assert ranking_as_predictions(tied.rankings.get()) == [[1, 2, 3, 4]]
    assert not tied.demonstrations.exists()


@pytest.mark.django_db
def test_fgrlhf_imported_twice_creates_nothing_new(project, admin_user):
    data = FGRLHF_SLICE.read_bytes()
    run_import(project, admin_user, data, "fgrlhf")

    again = run_import(project, admin_user, data, "fgrlhf")

    assert again.counts == {"rows": 5, "prompts": 0, "demonstrations": 0, "candidates": 0, "rankings": 0,
                            "unchanged": 5}
    assert Prompt.objects.filter(project=project).count() == 5
    assert Candidate.objects.filter(prompt__project=project).count() == 20
    assert Ranking.objects.filter(prompt__project=project).count() == 5
    assert Demonstration.objects.filter(prompt__project=project).count() == 3


@pytest.mark.django_db
def test_fgrlhf_reimport_restores_what_was_deleted(project, admin_user):
    data = FGRLHF_SLICE.read_bytes()
    run_import(project, admin_user, data, "fgrlhf")
    Ranking.objects.filter(prompt__project=project).delete()
    Candidate.objects.filter(prompt__project=project, external_id="prediction 4").delete()

    again = run_import(project, admin_user, data, "fgrlhf")

    assert again.counts == {"rows": 5, "prompts": 0, "demonstrations": 0, "candidates": 5, "rankings": 5,
                            "unchanged": 0}


@pytest.mark.django_db
def test_an_item_that_fails_halfway_leaves_nothing_behind(project, admin_user, monkeypatch):
    real = fgrlhf_module.imported_demonstration_get_or_create

    def demonstration_or_boom(*, text, **kwargs):
        if text == "explode":
            raise ValidationFailed("The demonstration could not be stored.")
        return real(text=text, **kwargs)

    monkeypatch.setattr(fgrlhf_module, "imported_demonstration_get_or_create", demonstration_or_boom)
    items = [fgrlhf_item([1] * 6, question="Kept?"), fgrlhf_item([1] * 6, question="Lost?", corrected="explode")]

    run = run_import(project, admin_user, items, "fgrlhf")

    # The prompt, candidates and ranking of item 2 were written before its demonstration failed;
    # its transaction takes them all back.
    assert run.errors == [{"line": 2, "message": "item 2: The demonstration could not be stored."}]
    assert [p.question for p in Prompt.objects.filter(project=project)] == ["Kept?"]
    assert Candidate.objects.filter(prompt__project=project).count() == 4
    assert Ranking.objects.filter(prompt__project=project).count() == 1


def test_preference_values_mean_tie_first_better_second_better():
    assert PREFERENCE_OUTCOMES == {0: "tie", 1: "a", 2: "b"}
    assert fgrlhf_preference_judgements([0, 1, 2, 0, 1, 2]) == [
        (0, 1, "tie"), (0, 2, "a"), (0, 3, "b"), (1, 2, "tie"), (1, 3, "a"), (2, 3, "b")]


@pytest.mark.parametrize(("preference", "groups"), [
    ([1, 1, 1, 1, 1, 1], [[0], [1], [2], [3]]),  # the first of every pair is better: 1 > 2 > 3 > 4
    ([2, 2, 2, 2, 2, 2], [[3], [2], [1], [0]]),  # the second is always better: reversed
    ([0, 0, 0, 0, 0, 0], [[0, 1, 2, 3]]),  # all ties: one group
    # A cycle 1 > 2 > 3 > 1, all three above 4: equal scores, one group.
    ([1, 2, 1, 1, 1, 1], [[0, 1, 2], [3]]),
    # 2 ties 3 and both beat 1 and 4; 1 beats 4.
    ([2, 2, 1, 0, 1, 1], [[1, 2], [0], [3]]),
])
def test_preference_to_tie_groups(preference, groups):
    judgements = fgrlhf_preference_judgements(preference)
    assert copeland_tie_groups(n_candidates=4, pairwise=judgements) == groups


@pytest.mark.django_db
@pytest.mark.parametrize(("preference", "expected"), [
    ([1, 1, 1, 1, 1, 1], [[1], [2], [3], [4]]),
    ([2, 2, 2, 2, 2, 2], [[4], [3], [2], [1]]),
    ([0, 0, 0, 0, 0, 0], [[1, 2, 3, 4]]),
    ([1, 2, 1, 1, 1, 1], [[1, 2, 3], [4]]),
])
def test_fgrlhf_hand_made_items_are_ranked_by_their_preferences(project, admin_user, preference, expected):
    run = run_import(project, admin_user, [fgrlhf_item(preference)], "fgrlhf")

    assert run.status == ImportRun.Status.SUCCEEDED
    ranking = Ranking.objects.get(prompt__project=project)
    assert ranking_as_predictions(ranking) == expected
    outcomes = [outcome for _, _, outcome in ranking.pairwise]
    assert outcomes == [PREFERENCE_OUTCOMES[v] for v in preference]


@pytest.mark.django_db
def test_fgrlhf_bad_items_are_reported_by_item_number(project, admin_user):
    items = [
        fgrlhf_item([1] * 6, question="Good one?"),
        fgrlhf_item([1, 1, 3, 1, 1, 1], question="Bad preference?"),
        fgrlhf_item([1] * 6, question=""),
        "not an object",
        {**fgrlhf_item([1] * 6, question="Missing prediction?"), "prediction 3": None},
        {**fgrlhf_item([1] * 6, question="Bad passage?"), "passages": [["only a title"]]},
        fgrlhf_item([2] * 6, question="Another good one?", corrected=""),
    ]

    run = run_import(project, admin_user, items, "fgrlhf")

    assert run.result == "partial"
    assert [e["line"] for e in run.errors] == [2, 3, 4, 5, 6]
    assert run.errors[0]["message"].startswith("item 2: preference must be a list of 6 values, each 0 (tie)")
    assert run.errors[1]["message"] == "item 3: question is empty."
    assert run.errors[2]["message"] == "item 4: Each item must be a JSON object, not text."
    assert run.errors[3]["message"] == "item 5: prediction 3 must be text."
    assert run.errors[4]["message"] == "item 6: passages[0] must be a list [title, sentence, ...] of text."
    assert run.counts == {"rows": 7, "prompts": 2, "demonstrations": 1, "candidates": 8, "rankings": 2,
                          "unchanged": 0}


@pytest.mark.django_db
def test_fgrlhf_file_that_is_not_a_list_fails_whole(project, admin_user):
    run = run_import(project, admin_user, {"question": "?"}, "fgrlhf")

    assert run.status == ImportRun.Status.FAILED
    assert run.counts["rows"] == 0
    assert run.errors == [{"line": 0, "message": "The file must hold one JSON list of items; it starts with '{'."}]


@pytest.mark.django_db
def test_fgrlhf_broken_json_keeps_the_items_before_it(project, admin_user):
    good = json.dumps(fgrlhf_item([1] * 6, question="First?"))
    text = f"[\n{good},\n{good.replace('First?', 'Second?')},\n{{\"question\": \"Third?\",, }}\n]"

    run = run_import(project, admin_user, text, "fgrlhf")

    assert run.result == "partial"
    assert run.counts["prompts"] == 2
    assert run.errors == [{"line": 3, "message": "item 3: invalid JSON: Expecting property name enclosed in double "
                                                 "quotes (line 4 of the file); the rest of the file was not read."}]


# --- the JSON list reader -------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_bytes", [1, 7, 100, 65536])
def test_json_list_reader_matches_json_load_at_any_chunk_size(chunk_bytes):
    items = [{"a": "é" * 50, "n": 12345.5}, [1, 2], 7, "text", None, {"nested": {"deep": [True, False]}}, 1e100]
    data = ("\ufeff [ " + " ,\n ".join(json.dumps(i, ensure_ascii=False) for i in items) + " ]\n").encode()

    reader = HashingReader(io.BytesIO(data))
    rows = list(json_list_items(reader, chunk_bytes=chunk_bytes))

    assert [(r.position, r.data, r.error) for r in rows] == [(n, item, None) for n, item in enumerate(items, 1)]
    assert reader.drain() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("text", "expected"), [
    ("", [(0, "The file is empty.")]),
    ("   \n", [(0, "The file is empty.")]),
    ("[]", []),
    ("[1 2]", [(1, None), (2, "invalid JSON after item 1: expected ',' or ']' but found '2' (line 1); the rest of "
                              "the file was not read.")]),
    ("[1,]", [(1, None), (2, "invalid JSON: Expecting value (line 1 of the file); the rest of the file was not "
                             "read.")]),
    ("[1", [(1, None), (2, "invalid JSON after item 1: expected ',' or ']' but found the end of the file (line 1); "
                           "the rest of the file was not read.")]),
    ("[1] x", [(1, None), (0, "Unexpected text after the closing ']' (line 1).")]),
    ('["\\ud800"]', [(1, "The row contains an unpaired UTF-16 surrogate escape (\\ud800–\\udfff), which cannot be "
                         "stored.")]),
])
def test_json_list_reader_reports_broken_files(text, expected):
    rows = list(json_list_items(HashingReader(io.BytesIO(text.encode())), chunk_bytes=2))

    assert [(r.position, r.error) for r in rows] == expected


def test_json_list_reader_stops_at_a_syntax_error_without_reading_the_rest():
    stream = io.BytesIO(b'[{"a": 1}, {"a" 2}, ' + b'{"padding": "' + b"x" * 1_000_000 + b'"}]')

    rows = list(json_list_items(HashingReader(stream), chunk_bytes=1024))

    assert [(r.position, r.error) for r in rows] == [
        (1, None),
        (2, "invalid JSON: Expecting ':' delimiter (line 1 of the file); the rest of the file was not read."),
    ]
    assert stream.tell() < 10_000


def test_json_list_reader_refuses_a_giant_item(monkeypatch):
    monkeypatch.setattr(readers_module, "MAX_ITEM_CHARS", 50)
    data = json.dumps([{"small": 1}, {"big": "x" * 200}]).encode()

    rows = list(json_list_items(HashingReader(io.BytesIO(data)), chunk_bytes=8))

    assert rows[0].data == {"small": 1}
    assert rows[1].error.startswith("longer than 50 characters or invalid JSON: Unterminated string")


def test_json_list_reader_reports_bytes_that_are_not_utf8():
    rows = list(json_list_items(HashingReader(io.BytesIO(b'[1, "\xff"]'))))

    assert [(r.position, r.error) for r in rows] == [
        (0, "The file is not UTF-8 text; the rest of the file was not read.")]


# --- jsonl ----------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_jsonl_plain_prompt(project, admin_user):
    run = run_import(project, admin_user, jsonl({"prompt": "Write a haiku about rain."}), "jsonl")

    assert run.status == ImportRun.Status.SUCCEEDED
    prompt = Prompt.objects.get(project=project)
    assert prompt.messages == [{"role": "user", "content": "Write a haiku about rain."}]
    assert (prompt.kind, prompt.source, prompt.source_format) == ("instruction", Source.IMPORTED, "jsonl")
    expected_id = hashlib.sha256(json.dumps({"prompt": "Write a haiku about rain."}, sort_keys=True).encode())
    assert prompt.external_id == expected_id.hexdigest()


@pytest.mark.django_db
def test_jsonl_messages_with_system_documents_kind_and_demonstration(project, admin_user):
    row = {
        "id": "fs-1",
        "system": "Answer in French.",
        "messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Bonjour"},
                     {"role": "user", "content": "Thank you"}],
        "kind": "few_shot",
        "documents": ["A plain passage.", {"title": "Greetings", "text": "Merci means thank you."}],
        "demonstration": "Merci",
    }

    run = run_import(project, admin_user, jsonl(row), "jsonl")

    assert run.counts == {"rows": 1, "prompts": 1, "demonstrations": 1, "candidates": 0, "rankings": 0,
                          "unchanged": 0}
    prompt = Prompt.objects.get(project=project, external_id="fs-1")
    assert prompt.kind == "few_shot"
    assert prompt.system == "Answer in French."
    assert prompt.messages[0] == {"role": "system", "content": "Answer in French."}
    assert prompt.question == "Thank you"
    assert prompt.documents == [{"title": "", "text": "A plain passage."},
                                {"title": "Greetings", "text": "Merci means thank you."}]
    demo = prompt.demonstrations.get()
    assert (demo.text, demo.external_id, demo.author) == ("Merci", "fs-1", imported_annotator())


@pytest.mark.django_db
def test_jsonl_candidates_with_a_ranking(project, admin_user):
    row = {"id": 7, "prompt": "Name a fruit.", "candidates": ["Apple", "Carrot", "Banana"], "ranking": [[0, 2], [1]]}

    run = run_import(project, admin_user, jsonl(row), "jsonl")

    assert run.counts == {"rows": 1, "prompts": 1, "demonstrations": 0, "candidates": 3, "rankings": 1,
                          "unchanged": 0}
    prompt = Prompt.objects.get(project=project, external_id="7")
    apple, carrot, banana = prompt.candidates.order_by("id")
    assert [apple.text, carrot.text, banana.text] == ["Apple", "Carrot", "Banana"]
    assert [c.external_id for c in (apple, carrot, banana)] == ["candidate 0", "candidate 1", "candidate 2"]
    assert banana.generation == {"source": "jsonl", "index": 2}
    ranking = prompt.rankings.get()
    assert ranking.ranking == [[apple.pk, banana.pk], [carrot.pk]]
    assert (ranking.annotator, ranking.source, ranking.pairwise) == (imported_annotator(), Source.IMPORTED, [])


@pytest.mark.django_db
def test_jsonl_candidates_without_ranking_and_a_named_annotator(project, admin_user, annotator):
    rows = jsonl(
        {"prompt": "Unranked", "candidates": ["One", "Two"]},
        {"prompt": "Ranked by a person", "candidates": ["One", "Two"], "ranking": [[1], [0]],
         "annotator": annotator.username},
    )

    run = run_import(project, admin_user, rows, "jsonl")

    assert run.counts == {"rows": 2, "prompts": 2, "demonstrations": 0, "candidates": 4, "rankings": 1,
                          "unchanged": 0}
    ranking = Ranking.objects.get(prompt__project=project)
    assert ranking.annotator == annotator
    assert ranking.prompt.question == "Ranked by a person"


@pytest.mark.django_db
def test_jsonl_anthropic_hh_pair(project, admin_user):
    row = {
        "chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: How do you like it?\n\nHuman: Soft.\n\n"
                  "Assistant: Boil it for six minutes.",
        "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: How do you like it?\n\nHuman: Soft.\n\n"
                    "Assistant: Eggs are laid by hens.",
    }

    run = run_import(project, admin_user, jsonl(row), "jsonl")

    assert run.counts == {"rows": 1, "prompts": 1, "demonstrations": 0, "candidates": 2, "rankings": 1,
                          "unchanged": 0}
    prompt = Prompt.objects.get(project=project)
    assert prompt.messages == [
        {"role": "user", "content": "How do I boil an egg?"},
        {"role": "assistant", "content": "How do you like it?"},
        {"role": "user", "content": "Soft."},
    ]
    assert prompt.kind == "conversation"
    chosen, rejected = prompt.candidates.order_by("id")
    assert (chosen.text, chosen.external_id) == ("Boil it for six minutes.", "chosen")
    assert (rejected.text, rejected.external_id) == ("Eggs are laid by hens.", "rejected")
    assert chosen.generation == {"source": "anthropic-hh", "label": "chosen"}
    ranking = prompt.rankings.get()
    assert ranking.ranking == [[chosen.pk], [rejected.pk]]
    assert (ranking.annotator, ranking.external_id) == (imported_annotator(), "hh-preference")


@pytest.mark.django_db
def test_jsonl_imported_twice_creates_nothing_new(project, admin_user):
    rows = jsonl(
        {"prompt": "No id"},
        {"id": "x", "prompt": "With id", "candidates": ["A", "B"], "ranking": [[0], [1]], "demonstration": "A"},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."},
    )
    first = run_import(project, admin_user, rows, "jsonl")

    again = run_import(project, admin_user, rows, "jsonl")

    assert first.counts == {"rows": 3, "prompts": 3, "demonstrations": 1, "candidates": 4, "rankings": 2,
                            "unchanged": 0}
    assert again.counts == {"rows": 3, "prompts": 0, "demonstrations": 0, "candidates": 0, "rankings": 0,
                            "unchanged": 3}
    assert Prompt.objects.filter(project=project).count() == 3


@pytest.mark.django_db
def test_jsonl_bad_rows_are_reported_with_line_numbers_and_good_rows_survive(project, admin_user, settings):
    settings.STUDIO_MAX_PROMPT_CHARS = 100
    lines = [
        {"prompt": "Good first row."},                                                            # 1
        '{"prompt": "broken",}',                                                                  # 2
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Again"}]},   # 3
        "",                                                                                       # 4 blank
        {"prompt": "   "},                                                                        # 5
        {"prompt": "x" * 101},                                                                    # 6
        {"prompt": "Rank", "candidates": ["a", "b", "c"], "ranking": [[0], [1]]},                 # 7
        {"prompt": "Rank", "candidates": ["a", "b"], "ranking": [[0], [2]]},                      # 8
        {"prompt": "Rank", "candidates": ["a", "b"], "ranking": [[0, 1], [1]]},                   # 9
        {"prompt": "Rank", "candidates": ["a", "b"], "ranking": "0>1"},                           # 10
        {"prompt": "Typo", "demonstartion": "x"},                                                 # 11
        {"prompt": "Who?", "candidates": ["a", "b"], "ranking": [[0], [1]], "annotator": "nobody"},  # 12
        ["not", "an", "object"],                                                                  # 13
        {"text": "no prompt"},                                                                    # 14
        {"chosen": "\n\nHuman: Hi\n\nAssistant: A"},                                              # 15
        {"chosen": "\n\nHuman: Hi\n\nAssistant: A", "rejected": "\n\nHuman: Yo\n\nAssistant: B"},  # 16
        {"prompt": "NUL \u0000 inside"},                                                          # 17
        {"prompt": "Good last row.", "kind": "few_shot_typo"},                                    # 18
        {"prompt": "Good last row."},                                                             # 19
    ]

    run = run_import(project, admin_user, jsonl(*lines), "jsonl")

    assert run.result == "partial"
    errors = {e["line"]: e["message"] for e in run.errors}
    assert sorted(errors) == [2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
    assert errors[2].startswith("invalid JSON: Expecting property name enclosed in double quotes (column 21)")
    assert errors[3] == ("Turns must alternate user/assistant starting with user; turn 2 is 'user' where "
                         "'assistant' was expected.")
    assert errors[5] == "prompt is empty."
    assert errors[6] == "prompt is 101 characters long; the limit is 100."
    assert errors[7] == "ranking leaves out candidate(s) 2: rank every candidate (put equal ones in one group)."
    assert errors[8] == "ranking names candidate 2, but the indexes of the 2 candidates are 0 to 1."
    assert errors[9] == "ranking names candidate 1 more than once."
    assert errors[10].startswith("ranking must be a list of tie groups")
    assert errors[11].startswith("A row cannot have 'demonstartion'; its keys are ")
    assert errors[12] == "annotator 'nobody' is not a user of this Studio."
    assert errors[13] == "Each line must be a JSON object, not a list."
    assert errors[14] == ('A row needs "prompt" (text), "messages" (chat turns), or "chosen" and "rejected"; '
                          "it has 'text'.")
    assert errors[15] == 'An Anthropic-HH row needs both "chosen" and "rejected".'
    assert errors[16] == ("chosen and rejected must be the same dialogue up to their final Assistant reply; they "
                          "differ at turn 1.")
    assert errors[17] == "prompt contains a NUL character."
    assert errors[18].startswith("Unknown prompt kind 'few_shot_typo'")
    assert run.counts == {"rows": 18, "prompts": 2, "demonstrations": 0, "candidates": 0, "rankings": 0,
                          "unchanged": 0}
    assert sorted(Prompt.objects.filter(project=project).values_list("messages", flat=True), key=str) == [
        [{"role": "user", "content": "Good first row."}], [{"role": "user", "content": "Good last row."}]]
    assert not Candidate.objects.filter(prompt__project=project).exists()


@pytest.mark.django_db
def test_jsonl_lines_that_cannot_be_decoded(project, admin_user):
    data = b'\xef\xbb\xbf{"prompt": "BOM first line"}\r\n{"prompt": "caf\xe9"}\n{"prompt": "\\ud83d alone"}\n'

    run = run_import(project, admin_user, data, "jsonl")

    assert run.errors == [
        {"line": 2, "message": "The line is not UTF-8 text (byte 16 of the line)."},
        {"line": 3, "message": "The row contains an unpaired UTF-16 surrogate escape (\\ud800–\\udfff), which "
                               "cannot be stored."},
    ]
    assert Prompt.objects.get(project=project).question == "BOM first line"


@pytest.mark.django_db
def test_html_and_script_are_stored_verbatim(project, admin_user):
    nasty = '<script>alert("x")</script><img src=x onerror=alert(1)> &amp; **bold**'
    row = {"prompt": nasty, "candidates": [nasty, "plain"], "ranking": [[1], [0]], "demonstration": nasty,
           "documents": [{"title": "<b>t</b>", "text": nasty}]}

    run_import(project, admin_user, jsonl(row), "jsonl")

    prompt = Prompt.objects.get(project=project)
    assert prompt.question == nasty
    assert prompt.documents == [{"title": "<b>t</b>", "text": nasty}]
    assert prompt.demonstrations.get().text == nasty
    assert prompt.candidates.order_by("id").first().text == nasty


@pytest.mark.django_db
def test_a_file_without_rows_fails(project, admin_user):
    run = run_import(project, admin_user, "\n\n", "jsonl")

    assert run.status == ImportRun.Status.FAILED
    assert run.errors == [{"line": 0, "message": "The file has no rows."}]


@pytest.mark.django_db
def test_every_row_bad_fails(project, admin_user):
    run = run_import(project, admin_user, jsonl({"prompt": ""}, "nope"), "jsonl")

    assert run.status == ImportRun.Status.FAILED
    assert [e["line"] for e in run.errors] == [1, 2]


@pytest.mark.django_db
def test_only_the_first_errors_are_listed(project, admin_user, monkeypatch):
    monkeypatch.setattr(run_module, "MAX_REPORTED_ERRORS", 2)

    run = run_import(project, admin_user, jsonl("x", "y", "z", "w", {"prompt": "ok"}), "jsonl")

    assert [e["line"] for e in run.errors] == [1, 2, 0]
    assert run.errors[-1]["message"] == "2 more bad rows are not listed."
    assert run.result == "partial"


# --- permissions and arguments -------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("role", ["annotator", "reviewer"])
def test_only_admins_can_import(project, make_user, role):
    with pytest.raises(PermissionDeniedError):
        run_import(project, make_user(role), jsonl({"prompt": "Hi"}), "jsonl")

    assert not Prompt.objects.exists()
    assert not ImportRun.objects.exists()


@pytest.mark.django_db
def test_the_system_can_import(project):
    run = run_import(project, None, jsonl({"prompt": "Hi"}), "jsonl")

    assert run.status == ImportRun.Status.SUCCEEDED
    assert run.created_by is None
    assert Prompt.objects.get(project=project).created_by is None


@pytest.mark.django_db
def test_unknown_format_is_rejected(project, admin_user):
    with pytest.raises(ValidationFailed, match="Unknown import format 'csv'"):
        run_import(project, admin_user, "a,b\n", "csv")


def test_tie_groups_check_accepts_a_permutation_with_ties():
    assert check_tie_groups([[2], [0, 1]], n_candidates=3) == [[2], [0, 1]]
    with pytest.raises(ValidationFailed):
        check_tie_groups([[0], [True]], n_candidates=2)
    with pytest.raises(ValidationFailed):
        check_tie_groups([[0], []], n_candidates=1)
