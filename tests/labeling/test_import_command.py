"""python manage.py import_data: summary, bad rows, and clear failures."""
import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from labeling.models import ImportRun, Prompt

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    """The command's copy of the file (an import keeps one while it runs) goes here."""
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


def import_data(*args, **options):
    out = io.StringIO()
    call_command("import_data", *args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


@pytest.mark.django_db
def test_command_imports_and_prints_a_summary(project):
    path = FIXTURES / "self_instruct_seed_tasks.jsonl"

    output = import_data(str(path), project=project.slug, format="self-instruct")

    run = ImportRun.objects.get(project=project)
    assert run.created_by is None  # the command runs as the system
    assert run.filename == "self_instruct_seed_tasks.jsonl"
    assert f"into {project.slug} (self-instruct): succeeded." in output
    assert "rows 175, prompts 175, demonstrations 175, candidates 0, rankings 0, unchanged 0" in output
    assert "Problems" not in output

    again = import_data(str(path), project=project.slug, format="self-instruct")

    assert "prompts 0, demonstrations 0, candidates 0, rankings 0, unchanged 175" in again
    assert Prompt.objects.filter(project=project).count() == 175


@pytest.mark.django_db
def test_command_lists_bad_rows_and_still_succeeds(project, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "Fine"}\nnot json\n\n{"prompt": ""}\n')

    output = import_data(str(path), "--project", project.slug, "--format", "jsonl")

    assert ": partial." in output
    assert "rows 3, prompts 1," in output
    assert "  Problems:" in output
    assert "line 2: invalid JSON: Expecting value (column 1)." in output
    assert "line 4: prompt is empty." in output


@pytest.mark.django_db
def test_command_names_bad_items_of_a_json_list(project, tmp_path):
    items = json.loads((FIXTURES / "fgrlhf_qa_dev_feedback_slice.json").read_text())
    items[1]["preference"] = [1, 1]
    path = tmp_path / "fg.json"
    path.write_text(json.dumps(items))

    output = import_data(str(path), project=project.slug, format="fgrlhf")

    assert "rows 5, prompts 4, demonstrations 2, candidates 16, rankings 4, unchanged 0" in output
    assert "    item 2: preference must be a list of 6 values" in output


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "options", "message"), [
    (["FILE"], {"project": "nope", "format": "jsonl"}, "No project with slug 'nope'."),
    (["FILE"], {"project": "SLUG", "format": "csv"}, "Unknown format 'csv'; use one of self-instruct, fgrlhf, jsonl."),
    (["/nonexistent/rows.jsonl"], {"project": "SLUG", "format": "jsonl"},
     "Cannot read /nonexistent/rows.jsonl: No such file or directory."),
    (["DIR"], {"project": "SLUG", "format": "jsonl"}, "Cannot read DIR: Is a directory."),
])
def test_command_fails_clearly_when_it_cannot_start(project, tmp_path, args, options, message):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "Hi"}\n')
    args = [str(path) if a == "FILE" else str(tmp_path) if a == "DIR" else a for a in args]
    options = {k: project.slug if v == "SLUG" else v for k, v in options.items()}

    with pytest.raises(CommandError) as excinfo:
        import_data(*args, **options)

    assert str(excinfo.value) == message.replace("DIR", str(tmp_path))
    assert not ImportRun.objects.exists()


@pytest.mark.django_db
def test_command_fails_when_no_row_could_be_read(project):
    path = FIXTURES / "self_instruct_seed_tasks.jsonl"  # JSONL given as the JSON-list format

    with pytest.raises(CommandError, match=r"Nothing could be imported from .* as fgrlhf; the first problem: The file "
                                           r"must hold one JSON list"):
        import_data(str(path), project=project.slug, format="fgrlhf")

    assert ImportRun.objects.get(project=project).status == ImportRun.Status.FAILED
    assert not Prompt.objects.exists()


@pytest.mark.django_db
def test_command_fails_when_every_row_is_bad(project, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": ""}\n{"text": "no prompt"}\n')
    out = io.StringIO()

    with pytest.raises(CommandError, match="the first problem: line 1: prompt is empty."):
        call_command("import_data", str(path), project=project.slug, format="jsonl", stdout=out)

    # The summary and every bad row are printed before it fails.
    assert ": failed." in out.getvalue()
    assert "    line 2: A row needs" in out.getvalue()
    assert ImportRun.objects.get(project=project).counts["rows"] == 2
