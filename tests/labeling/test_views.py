"""Server-rendered pages: who may open what, and that writing through a page stores structured,
validated data exactly once."""
from __future__ import annotations

import html

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse

from labeling.models import Demonstration, ImportRun, Project, Prompt
from tests.factories import PASSWORD, DemonstrationFactory, ProjectFactory, PromptFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_user(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def write_url(project) -> str:
    return reverse("prompt_write", kwargs={"slug": project.slug})


def page_text(response) -> str:
    return response.content.decode()


# --- Sign-in and roles ------------------------------------------------------------------------

def test_anonymous_is_sent_to_login(client, project):
    for url in ["/", f"/projects/{project.slug}/", write_url(project)]:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_login_page_and_form_sign_in(client, annotator):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert 'name="username"' in page_text(response) and 'name="password"' in page_text(response)
    response = client.post(reverse("login"), {"username": annotator.username, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert client.get("/").status_code == 200


def test_bad_password_shows_an_error(client, annotator):
    response = client.post(reverse("login"), {"username": annotator.username, "password": "wrong"})
    assert response.status_code == 200
    assert "enter a correct username and password" in page_text(response).lower()


def test_logout_signs_out(client, annotator):
    client.force_login(annotator)
    response = client.post(reverse("logout"))
    assert response.status_code == 302 and response["Location"] == reverse("login")
    assert client.get("/").status_code == 302


def test_user_without_a_role_gets_a_clear_403(client, project):
    user = get_user_model().objects.create_user(username="nobody", password=PASSWORD)
    client.force_login(user)
    for url in ["/", f"/projects/{project.slug}/", write_url(project)]:
        response = client.get(url)
        assert response.status_code == 403
        assert "no role" in page_text(response)


# --- Home -------------------------------------------------------------------------------------

def test_home_lists_projects_with_prompt_counts(as_user, annotator, project):
    PromptFactory.create_batch(3, project=project, created_by=annotator)
    ProjectFactory(name="Archived one", is_archived=True)
    response = as_user(annotator).get("/")
    text = page_text(response)
    assert response.status_code == 200
    assert project.name in text and "3 prompts" in text
    assert "Archived one" not in text
    assert "New project" not in text and "/admin/" not in text


def test_home_for_admins_has_new_project_and_admin_links(as_user, admin_user, project):
    text = page_text(as_user(admin_user).get("/"))
    assert reverse("project_create") in text
    assert "/admin/" in text and "/api/docs/" in text


# --- Project create / edit --------------------------------------------------------------------

PROJECT_POST = {
    "name": "Helpful answers", "slug": "helpful", "description": "Everyday questions.",
    "guidelines": "Be **kind**.", "k_candidates": "5", "overlap": "2", "lease_minutes": "20",
    "temperatures": "0.5, 0.9,1.2", "top_p": "0.9", "max_new_tokens": "300", "prompt_templates": "plain, step_by_step",
}


def test_admin_creates_a_project(as_user, admin_user):
    client = as_user(admin_user)
    assert client.get(reverse("project_create")).status_code == 200
    response = client.post(reverse("project_create"), PROJECT_POST)
    assert response.status_code == 302
    project = Project.objects.get(slug="helpful")
    assert response["Location"] == reverse("project_detail", kwargs={"slug": "helpful"})
    assert (project.k_candidates, project.overlap, project.lease_minutes) == (5, 2, 20)
    assert project.generation_settings == {"temperatures": [0.5, 0.9, 1.2], "top_p": 0.9, "max_new_tokens": 300,
                                           "prompt_templates": ["plain", "step_by_step"]}
    assert project.created_by == admin_user


@pytest.mark.parametrize("role", ["annotator", "reviewer"])
def test_non_admins_cannot_create_or_edit_projects(as_user, make_user, project, role):
    client = as_user(make_user(role))
    assert client.get(reverse("project_create")).status_code == 403
    assert client.post(reverse("project_create"), PROJECT_POST).status_code == 403
    assert client.get(reverse("project_edit", kwargs={"slug": project.slug})).status_code == 403
    assert client.post(reverse("project_edit", kwargs={"slug": project.slug}), PROJECT_POST).status_code == 403
    assert not Project.objects.filter(slug="helpful").exists()


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("k_candidates", "12", "less than or equal to 9"),
    ("temperatures", "hot, cold", "numbers separated by commas"),
    ("temperatures", "0.5, 3", "between 0 and 2"),
    ("top_p", "1.5", "top_p must be a number in (0, 1]"),
])
def test_invalid_project_re_renders_with_the_message(as_user, admin_user, field, value, expected):
    response = as_user(admin_user).post(reverse("project_create"), {**PROJECT_POST, field: value})
    assert response.status_code == 400
    assert html.escape(expected) in page_text(response)
    assert 'value="Helpful answers"' in page_text(response)  # what the user typed is kept
    assert not Project.objects.filter(slug="helpful").exists()


def test_duplicate_slug_is_reported_on_the_slug_field(as_user, admin_user, project):
    response = as_user(admin_user).post(reverse("project_create"), {**PROJECT_POST, "slug": project.slug})
    assert response.status_code == 400
    assert "already exists" in page_text(response)


def test_admin_edits_a_project(as_user, admin_user, project):
    client = as_user(admin_user)
    response = client.get(reverse("project_edit", kwargs={"slug": project.slug}))
    assert response.status_code == 200 and f'value="{project.name}"' in page_text(response)
    response = client.post(reverse("project_edit", kwargs={"slug": project.slug}),
                           {**PROJECT_POST, "slug": project.slug, "name": "Renamed", "is_archived": "on"})
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.name == "Renamed" and project.is_archived and project.k_candidates == 5


# --- Project page -----------------------------------------------------------------------------

def test_unknown_project_is_404(as_user, annotator):
    response = as_user(annotator).get("/projects/no-such-project/")
    assert response.status_code == 404
    assert "no-such-project" in page_text(response)


def test_archived_project_is_hidden_from_annotators(as_user, annotator, admin_user):
    archived = ProjectFactory(is_archived=True)
    assert as_user(annotator).get(f"/projects/{archived.slug}/").status_code == 404
    assert as_user(admin_user).get(f"/projects/{archived.slug}/").status_code == 200


def test_project_page_lists_prompts_and_stats(as_user, annotator, project):
    mine = PromptFactory(project=project, created_by=annotator,
                         messages=[{"role": "user", "content": "How do tides work?"}])
    DemonstrationFactory(prompt=mine, author=annotator)
    DemonstrationFactory(prompt=mine)  # someone else's: not counted for an annotator
    response = as_user(annotator).get(f"/projects/{project.slug}/")
    text = page_text(response)
    assert response.status_code == 200
    assert "How do tides work?" in text and reverse("prompt_detail", kwargs={"prompt_id": mine.pk}) in text
    assert "Your demonstrations" in text
    assert write_url(project) in text
    assert "Import data" not in text and ">Demonstrations</th>" not in text


def test_reviewers_see_demonstration_counts(as_user, reviewer, project):
    prompt = PromptFactory(project=project)
    DemonstrationFactory.create_batch(2, prompt=prompt)
    text = page_text(as_user(reviewer).get(f"/projects/{project.slug}/"))
    assert ">Demonstrations</th>" in text
    assert '<td class="num">2</td>' in text


def test_admins_see_import_button_and_recent_imports(as_user, admin_user, project):
    ImportRun.objects.create(project=project, format="jsonl", filename="batch-one.jsonl", file_sha256="0" * 64,
                             status=ImportRun.Status.SUCCEEDED, counts={"prompts": 2})
    text = page_text(as_user(admin_user).get(f"/projects/{project.slug}/"))
    assert reverse("import_create", kwargs={"slug": project.slug}) in text
    assert "batch-one.jsonl" in text


def test_prompt_list_is_paginated(as_user, annotator, project):
    PromptFactory.create_batch(30, project=project, created_by=annotator)
    client = as_user(annotator)
    first = page_text(client.get(f"/projects/{project.slug}/"))
    second = page_text(client.get(f"/projects/{project.slug}/?page=2"))
    assert "Page 1 of 2" in first and "Page 2 of 2" in second
    assert first.count("/prompts/") == 25 and second.count("/prompts/") == 5


def test_guidelines_markdown_is_rendered_and_sanitised(as_user, annotator):
    project = ProjectFactory(guidelines=(
        "## Be helpful\n\n*Prefer* **clear** answers.\n\n<script>alert('x')</script>\n\n"
        '<img src="x.png" onerror="alert(1)">\n\n<a href="javascript:alert(1)" onclick="evil()">link</a>'
    ))
    client = as_user(annotator)
    for url in [f"/projects/{project.slug}/", write_url(project)]:
        text = page_text(client.get(url))
        assert "<h2>Be helpful</h2>" in text and "<em>Prefer</em>" in text and "<strong>clear</strong>" in text
        assert "<script>alert" not in text
        assert "onerror" not in text and "onclick" not in text and "javascript:" not in text


# --- Writing prompts --------------------------------------------------------------------------

def test_prompt_writing_page_renders(as_user, annotator, project):
    response = as_user(annotator).get(write_url(project))
    text = page_text(response)
    assert response.status_code == 200
    assert 'name="idempotency_key"' in text
    for field in ['name="kind"', 'name="system"', 'name="instruction"', 'name="example_q"', 'name="example_a"',
                  'name="question"', 'name="turn_role"', 'name="turn_content"', 'name="doc_title"',
                  'name="doc_text"', 'name="demonstration"']:
        assert field in text
    assert "Add example" in text and "Add turn" in text and "Add document" in text
    assert "helpfulness" in text  # the guidelines beside the form
    assert 'data-max-chars="20000"' in text


def test_each_render_gets_a_new_idempotency_key(as_user, annotator, project):
    client = as_user(annotator)

    def key():
        return client.get(write_url(project)).context["draft"].idempotency_key

    assert key() != key()


def test_write_plain_instruction_with_demonstration(as_user, annotator, project):
    response = as_user(annotator).post(write_url(project), {
        "kind": "instruction", "instruction": "Write a haiku about tea.", "demonstration": "Steam curls...",
        "idempotency_key": "k-plain",
    })
    prompt = Prompt.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("prompt_detail", kwargs={"prompt_id": prompt.pk})
    assert prompt.kind == Prompt.Kind.INSTRUCTION and prompt.project == project and prompt.created_by == annotator
    assert prompt.messages == [{"role": "user", "content": "Write a haiku about tea."}]
    assert prompt.demonstrations.get().text == "Steam curls..."


def test_write_few_shot_with_system_and_documents(as_user, annotator, project):
    as_user(annotator).post(write_url(project), {
        "kind": "few_shot", "system": "Answer with one word.",
        "example_q": ["Capital of France?", "", "Capital of Italy?"], "example_a": ["Paris", "", "Rome"],
        "question": "Capital of Spain?",
        "doc_title": ["Atlas", ""], "doc_text": ["Madrid is the capital of Spain.", ""],
        "demonstration": "Madrid", "idempotency_key": "k-few",
        # Rows of the other kinds are posted too (no JS) and ignored.
        "instruction": "ignored", "turn_role": ["user"], "turn_content": ["ignored"],
    })
    prompt = Prompt.objects.get()
    assert prompt.kind == Prompt.Kind.FEW_SHOT
    assert prompt.messages == [
        {"role": "system", "content": "Answer with one word."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "Capital of Italy?"},
        {"role": "assistant", "content": "Rome"},
        {"role": "user", "content": "Capital of Spain?"},
    ]
    assert prompt.documents == [{"title": "Atlas", "text": "Madrid is the capital of Spain."}]
    assert prompt.demonstrations.get().text == "Madrid"


def test_write_conversation(as_user, annotator, project):
    response = as_user(annotator).post(write_url(project), {
        "kind": "conversation",
        "turn_role": ["user", "assistant", "user"],
        "turn_content": ["I need a gift idea.", "Who is it for?", "My sister, who loves hiking."],
        "idempotency_key": "k-conv",
    })
    assert response.status_code == 302
    prompt = Prompt.objects.get()
    assert prompt.kind == Prompt.Kind.CONVERSATION
    assert [m["role"] for m in prompt.messages] == ["user", "assistant", "user"]
    assert prompt.messages[2]["content"] == "My sister, who loves hiking."
    assert not prompt.demonstrations.exists()


def test_textarea_line_breaks_are_stored_as_newlines(as_user, annotator, project):
    as_user(annotator).post(write_url(project), {"kind": "instruction", "instruction": "Line one\r\nLine two"})
    assert Prompt.objects.get().messages[0]["content"] == "Line one\nLine two"


@pytest.mark.parametrize(("post", "expected"), [
    ({"kind": "conversation", "turn_role": ["user", "user"], "turn_content": ["Hi", "Hello?"]},
     "Turns must alternate user/assistant"),
    ({"kind": "few_shot", "example_q": ["2+2?"], "example_a": ["4"], "question": "  "}, "The question is empty."),
    ({"kind": "few_shot", "example_q": ["2+2?"], "example_a": [""], "question": "3+3?"},
     "Example 1 answer is empty."),
    ({"kind": "instruction", "instruction": ""}, "The instruction is empty."),
    ({"kind": "conversation", "turn_role": ["user"], "turn_content": ["Just one turn"]},
     "A conversation needs at least three turns"),
    ({"kind": "instruction", "instruction": "Fine", "doc_title": ["Only a title"], "doc_text": [""]},
     "Document 1 text is empty."),
    ({"kind": "riddle", "instruction": "Hi"}, "Choose what kind of prompt this is."),
])
def test_invalid_prompt_re_renders_with_the_message_and_creates_nothing(as_user, annotator, project, post,
                                                                       expected):
    response = as_user(annotator).post(write_url(project), {**post, "idempotency_key": "k-bad"})
    assert response.status_code == 400
    assert html.escape(expected) in page_text(response)
    assert Prompt.objects.count() == 0 and Demonstration.objects.count() == 0


def test_invalid_prompt_keeps_what_was_typed(as_user, annotator, project):
    response = as_user(annotator).post(write_url(project), {
        "kind": "conversation", "system": "Be brief.", "turn_role": ["user", "user"],
        "turn_content": ["First & only", "Second <turn>"], "doc_title": ["Notes"], "doc_text": ["Some notes"],
        "demonstration": "My answer", "idempotency_key": "k-keep",
    })
    text = page_text(response)
    assert 'value="conversation" checked' in text
    assert "First &amp; only" in text and "Second &lt;turn&gt;" in text
    assert "Be brief." in text and 'value="Notes"' in text and "Some notes" in text and "My answer" in text
    assert 'value="k-keep"' in text  # the same key: nothing was created, so resubmitting is safe


@override_settings(STUDIO_MAX_PROMPT_CHARS=50)
def test_oversize_prompt_is_refused(as_user, annotator, project):
    response = as_user(annotator).post(write_url(project), {
        "kind": "few_shot", "example_q": ["q" * 20], "example_a": ["a" * 20], "question": "x" * 20,
    })
    assert response.status_code == 400
    assert "The prompt is 60 characters long; the limit is 50." in page_text(response)
    assert 'data-max-chars="50"' in page_text(response)
    assert Prompt.objects.count() == 0


def test_double_submit_creates_one_prompt(as_user, annotator, project):
    client = as_user(annotator)
    form = {"kind": "instruction", "instruction": "Explain photosynthesis.", "demonstration": "Plants...",
            "idempotency_key": client.get(write_url(project)).context["draft"].idempotency_key}
    first = client.post(write_url(project), form)
    second = client.post(write_url(project), form)
    assert Prompt.objects.count() == 1 and Demonstration.objects.count() == 1
    assert first["Location"] == second["Location"]
    assert "already saved" in page_text(client.get(second["Location"]))


def test_html_in_a_prompt_is_stored_verbatim_and_shown_escaped(as_user, annotator, project):
    payload = "<script>alert(1)</script>"
    client = as_user(annotator)
    client.post(write_url(project), {"kind": "instruction", "instruction": payload, "demonstration": payload,
                                     "system": payload, "doc_title": [payload], "doc_text": [payload]})
    prompt = Prompt.objects.get()
    assert prompt.messages[1]["content"] == payload and prompt.system == payload
    assert prompt.documents == [{"title": payload, "text": payload}]
    for url in [reverse("prompt_detail", kwargs={"prompt_id": prompt.pk}), f"/projects/{project.slug}/"]:
        text = page_text(client.get(url))
        assert "<script>alert(1)" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


# --- Prompt page and demonstrations -----------------------------------------------------------

def test_unknown_prompt_is_404(as_user, annotator):
    assert as_user(annotator).get("/prompts/999999/").status_code == 404


def test_prompt_page_shows_transcript_documents_and_examples(as_user, annotator, project):
    prompt = PromptFactory(project=project, kind=Prompt.Kind.FEW_SHOT, messages=[
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Q one"}, {"role": "assistant", "content": "A one"},
        {"role": "user", "content": "The real question"},
    ], documents=[{"title": "Handbook", "text": "Line 1\nLine 2"}])
    text = page_text(as_user(annotator).get(reverse("prompt_detail", kwargs={"prompt_id": prompt.pk})))
    assert "Be terse." in text
    assert "Example 1 · question" in text and "Example 1 · answer" in text
    assert "The real question" in text and ">Question<" in text
    assert "<details" in text and "Handbook" in text and "Line 1\nLine 2" in text


def test_annotators_see_only_their_own_demonstrations(as_user, annotator, project):
    other = UserFactory(username="other-annotator")
    prompt = PromptFactory(project=project, created_by=other)
    DemonstrationFactory(prompt=prompt, author=annotator, text="Mine, visible")
    DemonstrationFactory(prompt=prompt, author=other, text="Theirs, hidden")
    text = page_text(as_user(annotator).get(reverse("prompt_detail", kwargs={"prompt_id": prompt.pk})))
    assert "Mine, visible" in text
    assert "Theirs, hidden" not in text and "other-annotator" not in text


def test_reviewers_see_every_demonstration_with_its_author(as_user, reviewer, project):
    author = UserFactory(username="writer-one")
    prompt = PromptFactory(project=project, created_by=author)
    DemonstrationFactory(prompt=prompt, author=author, text="First answer")
    DemonstrationFactory(prompt=prompt, text="Second answer")
    text = page_text(as_user(reviewer).get(reverse("prompt_detail", kwargs={"prompt_id": prompt.pk})))
    assert "First answer" in text and "Second answer" in text and "writer-one" in text


def test_write_a_demonstration_once(as_user, annotator, project):
    prompt = PromptFactory(project=project)
    client = as_user(annotator)
    url = reverse("prompt_detail", kwargs={"prompt_id": prompt.pk})
    key = client.get(url).context["form"].initial["idempotency_key"]
    first = client.post(url, {"text": "A careful answer.", "idempotency_key": key})
    second = client.post(url, {"text": "A careful answer.", "idempotency_key": key})
    demo = Demonstration.objects.get()
    assert demo.author == annotator and demo.text == "A careful answer." and demo.prompt == prompt
    assert first["Location"] == second["Location"] == f"{url}#demonstration-{demo.pk}"


def test_empty_demonstration_is_refused(as_user, annotator, project):
    prompt = PromptFactory(project=project)
    response = as_user(annotator).post(reverse("prompt_detail", kwargs={"prompt_id": prompt.pk}),
                                       {"text": "   ", "idempotency_key": "k"})
    assert response.status_code == 400
    assert "The answer is empty." in page_text(response)
    assert not Demonstration.objects.exists()


# --- Imports ----------------------------------------------------------------------------------

def test_import_form_renders_for_admins(as_user, admin_user, project):
    response = as_user(admin_user).get(reverse("import_create", kwargs={"slug": project.slug}))
    text = page_text(response)
    assert response.status_code == 200
    assert 'type="file"' in text and 'name="format"' in text and 'enctype="multipart/form-data"' in text
    from labeling.importers import IMPORT_FORMATS

    for name in IMPORT_FORMATS:
        assert f'value="{name}"' in text


@pytest.mark.parametrize("role", ["annotator", "reviewer"])
def test_non_admins_cannot_import(as_user, make_user, project, role):
    client = as_user(make_user(role))
    url = reverse("import_create", kwargs={"slug": project.slug})
    assert client.get(url).status_code == 403
    upload = SimpleUploadedFile("rows.jsonl", b'{"prompt": "hi"}\n')
    assert client.post(url, {"file": upload, "format": "jsonl"}).status_code == 403


def test_import_upload_queues_the_import_and_its_page_shows_progress_then_the_report(
        as_user, admin_user, project, published_jobs, settings, tmp_path):
    from tests.job_fixtures import run_published

    settings.DATA_DIR = tmp_path
    client = as_user(admin_user)
    url = reverse("import_create", kwargs={"slug": project.slug})
    data = b'{"prompt": "Fine"}\n{"prompt": "Also fine"}\n{"prompt": "x", "<prompt>": 1}\n'
    response = client.post(url, {"file": SimpleUploadedFile("rows.jsonl", data), "format": "jsonl"})
    run = ImportRun.objects.get()
    detail = reverse("import_detail", kwargs={"slug": project.slug, "run_id": run.pk})
    assert response.status_code == 302 and response["Location"] == detail
    assert run.status == ImportRun.Status.QUEUED and run.created_by == admin_user and run.filename == "rows.jsonl"
    assert [m["args"] for m in published_jobs] == [[run.pk]] and (tmp_path / run.path).read_bytes() == data
    queued = page_text(client.get(detail))
    assert "Queued" in queued and reverse("import_progress", kwargs={"slug": project.slug, "run_id": run.pk}) in queued
    assert "Cancel import" in queued and "What was imported" not in queued

    run_published(published_jobs[0])  # a worker runs it

    text = page_text(client.get(detail))
    assert "Succeeded with bad rows" in text and "&lt;prompt&gt;" in text and "<prompt>" not in text
    assert ">3<" in text and "Cancel import" not in text
    assert "rows.jsonl" in page_text(client.get(url))  # listed under previous imports
    assert Prompt.objects.filter(project=project).count() == 2


def test_import_progress_fragment_polls_until_the_import_ends(as_user, admin_user, project, published_jobs, settings,
                                                              tmp_path):
    from tests.job_fixtures import run_published

    settings.DATA_DIR = tmp_path
    client = as_user(admin_user)
    client.post(reverse("import_create", kwargs={"slug": project.slug}),
                {"file": SimpleUploadedFile("rows.jsonl", b'{"prompt": "Hi"}\n'), "format": "jsonl"})
    run = ImportRun.objects.get()
    progress = reverse("import_progress", kwargs={"slug": project.slug, "run_id": run.pk})
    live = client.get(progress + "?was=live", HTTP_HX_REQUEST="true")
    assert 'hx-trigger="every' in page_text(live) and "HX-Refresh" not in live
    run_published(published_jobs[0])
    done = client.get(progress + "?was=live", HTTP_HX_REQUEST="true")
    assert done["HX-Refresh"] == "true" and 'hx-trigger="every' not in page_text(done)


def test_an_admin_cancels_a_queued_import_from_its_page(as_user, admin_user, project, published_jobs, settings,
                                                        tmp_path):
    settings.DATA_DIR = tmp_path
    client = as_user(admin_user)
    client.post(reverse("import_create", kwargs={"slug": project.slug}),
                {"file": SimpleUploadedFile("rows.jsonl", b'{"prompt": "Hi"}\n'), "format": "jsonl"})
    run = ImportRun.objects.get()
    upload = tmp_path / run.path
    response = client.post(reverse("import_cancel", kwargs={"slug": project.slug, "run_id": run.pk}), follow=True)
    run.refresh_from_db()
    assert run.status == ImportRun.Status.CANCELLED and "cancelled" in page_text(response)
    assert not upload.exists() and run.path == ""  # nobody will read it now


def test_import_detail_is_admin_only(as_user, reviewer, project):
    run = ImportRun.objects.create(project=project, format="jsonl", filename="f.jsonl", file_sha256="0" * 64,
                                   status=ImportRun.Status.SUCCEEDED)
    url = reverse("import_detail", kwargs={"slug": project.slug, "run_id": run.pk})
    assert as_user(reviewer).get(url).status_code == 403


def test_admin_project_page_links_generation_and_models(client, admin_user, project):
    client.force_login(admin_user)
    html = client.get(f"/projects/{project.slug}/").content.decode()
    assert f'href="/projects/{project.slug}/generate/"' in html
    assert 'href="/models/"' in html
