"""The work-queue pages: taking the next task, the ranking page (candidates in the stored order,
escaped, safety marks), skipping, the annotator's figures, and the reviewer pages (who may open
them, the side-by-side labels, rejecting with a reason, the agreement dashboard)."""
from __future__ import annotations

import html
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from labeling import queue
from labeling.label_checks import FLAGS
from labeling.models import LabelReview, Task
from tests.factories import PASSWORD, CandidateFactory, ProjectFactory, PromptFactory
from tests.labeling.queue_helpers import lease, prompt_with_candidates, submit

pytestmark = pytest.mark.django_db

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


@pytest.fixture
def project():
    return ProjectFactory(name="Helpful", slug="helpful", overlap=2, lease_minutes=30)


@pytest.fixture
def as_user(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def text_of(response) -> str:
    return response.content.decode()


def next_url(project) -> str:
    return reverse("task_next", kwargs={"slug": project.slug})


def task_url(task) -> str:
    return reverse("task_page", kwargs={"task_id": task.pk})


def review_url(project, prompt=None) -> str:
    if prompt is None:
        return reverse("review_dashboard", kwargs={"slug": project.slug})
    return reverse("review_prompt", kwargs={"slug": project.slug, "prompt_id": prompt.pk})


def reject_url(project, label) -> str:
    return reverse("label_reject", kwargs={"slug": project.slug, "prompt_id": label.prompt_id, "label_id": label.pk})


# --- Taking the next task ---------------------------------------------------------------------

def test_next_task_leases_a_ranking_task_and_opens_its_page(as_user, annotator, project):
    prompt = prompt_with_candidates(project, 4)
    client = as_user(annotator)
    response = client.post(next_url(project))
    task = Task.objects.get(annotator=annotator)
    assert task.kind == Task.Kind.RANK and task.prompt == prompt and task.status == Task.Status.LEASED
    assert response.status_code == 302 and response["Location"] == task_url(task)
    # A second click (or another tab) gets the same lease back, not a second one.
    assert client.post(next_url(project))["Location"] == task_url(task)
    assert Task.objects.filter(annotator=annotator).count() == 1


def test_next_task_is_post_only(as_user, annotator, project):
    prompt_with_candidates(project)
    assert as_user(annotator).get(next_url(project)).status_code == 405
    assert not Task.objects.exists()


def test_next_task_with_nothing_left_says_so_on_the_project_page(as_user, annotator, project):
    PromptFactory(project=project)  # no candidates: nothing to rank
    response = as_user(annotator).post(next_url(project), follow=True)
    assert response.redirect_chain[-1][0] == reverse("project_detail", kwargs={"slug": project.slug})
    assert "No ranking work is left for you" in text_of(response)
    assert not Task.objects.exists()


def test_next_task_needs_a_role_and_a_visible_project(client, as_user, annotator, project):
    prompt_with_candidates(project)
    assert client.post(next_url(project))["Location"].startswith(reverse("login"))
    nobody = get_user_model().objects.create_user(username="nobody", password=PASSWORD)
    assert as_user(nobody).post(next_url(project)).status_code == 403
    archived = ProjectFactory(is_archived=True)
    assert as_user(annotator).post(next_url(archived)).status_code == 404


# --- The ranking page -------------------------------------------------------------------------

def test_ranking_page_shows_the_prompt_and_candidates_in_the_shown_order(as_user, annotator, project):
    prompt = PromptFactory(project=project, kind="conversation", documents=[{"title": "Atlas", "text": "Ottawa."}],
                           messages=[{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Capital of Canada?"},
                                     {"role": "assistant", "content": "Do you mean the city?"},
                                     {"role": "user", "content": "Yes, the capital city."}])
    for text in ["Ottawa.", "Toronto.", "It is Ottawa, in Ontario.", "Montreal."]:
        CandidateFactory(prompt=prompt, text=text)
    task = lease(annotator, project)
    response = as_user(annotator).get(task_url(task))
    page = text_of(response)
    assert response.status_code == 200
    for text in ["Be brief.", "Do you mean the city?", "Yes, the capital city.", "Atlas"]:
        assert text in page
    positions = [page.index(f'data-candidate="{cid}"') for cid in task.shown_order]
    assert positions == sorted(positions)  # the per-annotator shuffled order, as stored
    for index, letter in enumerate("ABCD"):
        assert f'data-candidate="{task.shown_order[index]}" data-letter="{letter}"' in page
    for label in FLAGS.values():  # the flag vocabulary, as the server checks it
        assert html.escape(label) in page
    assert page.count('type="radio" name="rating-') == 4 * 7
    assert 'id="rank-config"' in page and reverse("api-task-submit", kwargs={"task_id": task.pk}) in page
    for shortcut in ["<kbd>K</kbd>", "<kbd>T</kbd>", "<kbd>R</kbd>", "<kbd>F</kbd>", "<kbd>Ctrl</kbd>"]:
        assert shortcut in page


def test_candidate_text_is_escaped_and_safety_flags_are_marked(as_user, annotator, project):
    prompt = prompt_with_candidates(project, 2, texts=[XSS, "Email me at jane@example.com"])
    flagged = prompt.candidates.get(text__startswith="Email")
    flagged.safety_flags = [{"check": "pii.email", "label": "pii", "detail": "email address j***@example.com"}]
    flagged.save()
    task = lease(annotator, project)
    page = text_of(as_user(annotator).get(task_url(task)))
    assert XSS not in page and "<script>window.__xss" not in page and "<img src=x" not in page
    assert html.escape(XSS) in page
    assert "The safety screen flagged this answer" in page
    assert "Personal information" in page and "email address j***@example.com" in page
    assert page.count("⚠ Safety screen") == 1


def test_someone_elses_task_is_404_and_a_user_without_a_role_403(as_user, make_user, annotator, project):
    prompt_with_candidates(project)
    task = lease(annotator, project)
    response = as_user(make_user("annotator")).get(task_url(task))
    assert response.status_code == 404
    assert "is yours" in text_of(response)
    # Reviewers do not open annotators' tasks either: a lease is its annotator's alone.
    assert as_user(make_user("reviewer")).get(task_url(task)).status_code == 404
    nobody = get_user_model().objects.create_user(username="nobody", password=PASSWORD)
    assert as_user(nobody).get(task_url(task)).status_code == 403
    assert as_user(annotator).get(reverse("task_page", kwargs={"task_id": 99999})).status_code == 404


@pytest.mark.parametrize(("finish", "expected"), [
    ("submit", "You submitted this task"),
    ("skip", "You skipped this task"),
    ("release", "handed back unfinished"),
    ("expire", "lease on this task ran out"),
])
def test_a_finished_task_shows_why_and_the_next_task_button(as_user, annotator, project, finish, expected):
    prompt_with_candidates(project)
    task = lease(annotator, project)
    if finish == "submit":
        submit(annotator, task)
    elif finish == "skip":
        queue.task_skip(user=annotator, task=task, reason="unclear")
    elif finish == "release":
        queue.task_release(user=annotator, task=task)
    else:
        Task.objects.filter(pk=task.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = as_user(annotator).get(task_url(task))
    page = text_of(response)
    assert response.status_code == 200
    assert expected in page and next_url(project) in page
    assert 'id="answers"' not in page
    assert f"studio.rank.draft.{task.pk}" in page  # its draft is dropped from the device


def test_skip_with_a_reason_then_the_next_task(as_user, annotator, project):
    prompt_with_candidates(project)
    second = prompt_with_candidates(project)
    task = lease(annotator, project)
    client = as_user(annotator)
    response = client.post(reverse("task_skip", kwargs={"task_id": task.pk}),
                           {"reason": "other", "reason_other": "  Needs medical knowledge  "})
    task.refresh_from_db()
    assert task.status == Task.Status.SKIPPED and task.skip_reason == "Needs medical knowledge"
    following = Task.objects.get(annotator=annotator, status=Task.Status.LEASED)
    assert following.prompt == second and response["Location"] == task_url(following)
    response = client.post(reverse("task_skip", kwargs={"task_id": following.pk}),
                           {"reason": "The prompt is unclear or broken"}, follow=True)
    assert "No ranking work is left for you" in text_of(response)
    assert Task.objects.get(pk=following.pk).skip_reason == "The prompt is unclear or broken"


def test_release_form_hands_the_task_back(as_user, annotator, project):
    prompt_with_candidates(project)
    task = lease(annotator, project)
    response = as_user(annotator).post(reverse("task_release", kwargs={"task_id": task.pk}))
    assert response.status_code == 302
    assert Task.objects.get(pk=task.pk).status == Task.Status.RELEASED


def test_a_demonstration_lease_from_the_api_can_be_written_on_its_page(as_user, annotator, project):
    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": "Name a prime number."}])
    task = lease(annotator, project, kinds="write_demonstration")
    client = as_user(annotator)
    page = text_of(client.get(task_url(task)))
    assert "Name a prime number." in page and "Ideal answer" in page
    # The next-task button returns the lease already held, whatever its kind.
    assert client.post(next_url(project))["Location"] == task_url(task)
    response = client.post(task_url(task), {"demonstration": "", "idempotency_key": "k1"})
    assert response.status_code == 400
    response = client.post(task_url(task), {"demonstration": "7", "idempotency_key": "k1"})
    assert response.status_code == 302
    assert prompt.demonstrations.get().text == "7"
    assert Task.objects.get(pk=task.pk).status == Task.Status.SUBMITTED


# --- Annotator home ---------------------------------------------------------------------------

def test_home_and_project_page_show_my_work_and_the_next_task_button(as_user, make_user, annotator, project):
    project.overlap = 1
    project.save()
    prompt_with_candidates(project)
    prompt_with_candidates(project)
    submit(annotator, lease(annotator, project))
    client = as_user(annotator)
    home = text_of(client.get("/"))
    assert "Done today" in home and "consensus of the other annotators" in home
    assert "1 of 2 prompts" in home and 'aria-valuenow="1"' in home
    assert next_url(project) in home
    page = text_of(client.get(reverse("project_detail", kwargs={"slug": project.slug})))
    assert "Your work" in page and next_url(project) in page and "1 of 2 prompts" in page
    assert review_url(project) not in page  # annotators are not offered the reviewer pages
    project_url = reverse("project_detail", kwargs={"slug": project.slug})
    reviewer_page = text_of(as_user(make_user("reviewer")).get(project_url))
    assert review_url(project) in reviewer_page


# --- Reviewer pages ---------------------------------------------------------------------------

@pytest.fixture
def labelled(project, make_user):
    """A prompt ranked by two annotators (one with a comment and flags), plus the objects."""
    prompt = prompt_with_candidates(project, 3, texts=["Short.", XSS, "A much longer answer than the others."])
    first, second = make_user("annotator", username="ada"), make_user("annotator", username="grace")
    ids = sorted(prompt.candidates.values_list("id", flat=True))
    submit(first, lease(first, project), ranking=[[ids[2]], [ids[0], ids[1]]],
           flags={str(ids[1]): ["unsafe"]}, comment="B tries to run a <b>script</b>.")
    submit(second, lease(second, project), ranking=[[ids[2]], [ids[0]], [ids[1]]])
    labels = list(prompt.rankings.order_by("id"))
    return prompt, labels, ids


def test_annotators_cannot_open_the_reviewer_pages(as_user, annotator, project, labelled):
    prompt, labels, _ = labelled
    client = as_user(annotator)
    assert client.get(review_url(project)).status_code == 403
    assert client.get(review_url(project, prompt)).status_code == 403
    response = client.post(reject_url(project, labels[0]), {"reason": "nope"})
    assert response.status_code in (403, 404)
    assert not LabelReview.objects.exists()


def test_prompt_labels_side_by_side_with_consensus(as_user, reviewer, project, labelled):
    prompt, labels, ids = labelled
    response = as_user(reviewer).get(review_url(project, prompt))
    page = text_of(response)
    assert response.status_code == 200
    assert "ada" in page and "grace" in page and "Consensus" in page
    assert "Unsafe or harmful" in page  # ada's flag on answer B
    assert html.escape("B tries to run a <b>script</b>.") in page and "<b>script</b>" not in page
    assert XSS not in page and html.escape(XSS) in page
    assert page.count('class="reject-form"') == 2
    # Answer C (the longest, id order) is everyone's best and the consensus' best.
    assert page.count('<span class="pos pos-1">1</span>') == 3


def test_reviewer_rejects_a_label_with_a_reason(as_user, reviewer, project, labelled):
    prompt, labels, _ = labelled
    client = as_user(reviewer)
    response = client.post(reject_url(project, labels[0]), {"reason": ""})
    assert response.status_code == 400
    assert "reason" in text_of(response).lower() and not LabelReview.objects.exists()
    response = client.post(reject_url(project, labels[0]), {"reason": "Tied B with A against the guidelines."})
    assert response.status_code == 302 and response["Location"].endswith(f"#label-{labels[0].pk}")
    rejection = LabelReview.objects.get()
    assert rejection.ranking == labels[0] and rejection.reviewer == reviewer
    page = text_of(client.get(review_url(project, prompt), follow=True))
    assert "Rejected by" in page and "Tied B with A against the guidelines." in page
    assert page.count('class="reject-form"') == 1
    # The rejected label's task gave its slot back: the prompt is in the queue again.
    assert Task.objects.get(label=labels[0]).slot is None
    # Rejecting again is harmless.
    assert client.post(reject_url(project, labels[0]), {"reason": "again"}).status_code == 302
    assert LabelReview.objects.count() == 1


def test_reject_checks_the_label_belongs_to_the_prompt_and_project(as_user, reviewer, project, labelled):
    prompt, labels, _ = labelled
    other_prompt = prompt_with_candidates(project)
    client = as_user(reviewer)
    url = reverse("label_reject", kwargs={"slug": project.slug, "prompt_id": other_prompt.pk, "label_id": labels[0].pk})
    assert client.post(url, {"reason": "x"}).status_code == 404
    other_project = ProjectFactory()
    assert client.get(review_url(other_project, prompt)).status_code == 404
    assert client.get(reverse("review_prompt", kwargs={"slug": project.slug, "prompt_id": 99999})).status_code == 404
    assert not LabelReview.objects.exists()


def test_dashboard_shows_agreement_bias_and_annotators(as_user, reviewer, admin_user, project, labelled):
    prompt, labels, _ = labelled
    response = as_user(reviewer).get(review_url(project))
    page = text_of(response)
    assert response.status_code == 200
    for heading in ["Pairwise agreement", "Kendall", "Krippendorff", "Position bias", "Length bias", "Annotators"]:
        assert heading in page
    assert "ada" in page and "grace" in page
    assert review_url(project, prompt) in page
    # Both labels put C first and B last but ada tied A and B: 2 of 3 pairs agree.
    assert "67%" in page
    assert as_user(admin_user).get(review_url(project)).status_code == 200


def test_dashboard_of_a_project_without_labels(as_user, reviewer, project):
    response = as_user(reviewer).get(review_url(project))
    assert response.status_code == 200
    assert "No labels yet." in text_of(response) and "No prompt has a label yet." in text_of(response)


# --- Reward scores on the reviewer's prompt page -----------------------------------------------

def scores_url(project, prompt) -> str:
    return reverse("modelhub:review_scores", kwargs={"slug": project.slug, "prompt_id": prompt.pk})


def _reward_model(project, name="rm-<b>x</b>"):
    from modelhub.models import ModelArtifact

    return ModelArtifact.objects.create(name=name, kind="reward", project=project, path="/nowhere")


def test_review_page_without_a_reward_model_shows_no_scores(as_user, reviewer, project, labelled):
    from modelhub.models import ModelArtifact

    prompt, _, _ = labelled
    ModelArtifact.objects.create(name="rm-elsewhere", kind="reward", project=ProjectFactory(), path="/nowhere")
    ModelArtifact.objects.create(name="rm-imported", kind="reward", path="/nowhere")
    page = text_of(as_user(reviewer).get(review_url(project, prompt)))
    assert "reward-status" not in page and "col-reward" not in page
    fragment = text_of(as_user(reviewer).get(scores_url(project, prompt)))
    assert "no reward model yet" in fragment


def test_review_page_loads_the_reward_scores_after_it_renders(as_user, reviewer, admin_user, annotator, project,
                                                               labelled, monkeypatch):
    import training.evaluations

    prompt, _, ids = labelled
    _reward_model(project, name="rm-old")
    rm = _reward_model(project)  # the newest of the project's reward models scores
    calls = []

    def fake_score(*, user, model, messages, candidates, documents=None):
        calls.append({"model": model, "messages": messages, "candidates": candidates})
        return [0.25, -1.5, 1.75]

    monkeypatch.setattr(training.evaluations, "model_score", fake_score)
    page = text_of(as_user(reviewer).get(review_url(project, prompt)))
    assert calls == []  # the page itself never waits for a model
    assert f'hx-get="{scores_url(project, prompt)}" hx-trigger="load"' in page
    assert all(f'id="reward-{cid}"' in page for cid in ids)
    assert "rm-&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    fragment = text_of(as_user(reviewer).get(scores_url(project, prompt)))
    assert calls[0]["model"] == rm and calls[0]["messages"] == prompt.messages
    assert calls[0]["candidates"] == [prompt.candidates.get(pk=cid).text for cid in ids]  # id order, like the rows
    for cid, shown in zip(ids, ["0.25", "-1.50", "1.75"]):
        cell = fragment[fragment.index(f'id="reward-{cid}"'):]
        assert 'hx-swap-oob="true"' in cell[:80] and shown in cell[:400]
    assert fragment.count("reward-best") == 1 and 'reward-score reward-best" title="Place 1 of 3' in fragment
    assert "rm-&lt;b&gt;x&lt;/b&gt;" in fragment and "<b>x</b>" not in fragment
    assert as_user(admin_user).get(scores_url(project, prompt)).status_code == 200
    assert as_user(annotator).get(scores_url(project, prompt)).status_code == 403
    other = PromptFactory(project=ProjectFactory())
    assert as_user(reviewer).get(scores_url(project, other)).status_code == 404


@pytest.mark.parametrize("error,shown", [
    ("validation", "Reward scores unavailable: candidates must be a list of 1 to 16 answers."),
    ("load", "Reward scores unavailable: rm-&lt;b&gt;x&lt;/b&gt; could not be loaded: no weights &lt;here&gt;"),
])
def test_a_reward_model_that_cannot_score_gives_a_short_message(as_user, reviewer, project, labelled, monkeypatch,
                                                                 error, shown):
    import training.evaluations
    from modelhub.loading import ModelLoadError
    from studio.errors import ValidationFailed

    prompt, _, ids = labelled
    _reward_model(project)

    def failing(**kwargs):
        if error == "validation":
            raise ValidationFailed("candidates must be a list of 1 to 16 answers.")
        raise ModelLoadError("no weights <here>")

    monkeypatch.setattr(training.evaluations, "model_score", failing)
    response = as_user(reviewer).get(scores_url(project, prompt))
    fragment = text_of(response)
    assert response.status_code == 200 and shown in fragment
    assert all(f'id="reward-{cid}"' in fragment for cid in ids) and "reward-score" not in fragment  # cells emptied


def test_a_real_reward_model_scores_the_answers(as_user, reviewer, make_user, tiny_model, settings, tmp_path,
                                                monkeypatch):
    """A tiny reward model trained here, in-process, scores a prompt's answers on the review page."""
    from modelhub.selectors import project_reward_model
    from tests.training.helpers import build_marker_project
    from training import runs
    from training.tasks import training_run_task

    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    monkeypatch.setattr(training_run_task, "apply_async", lambda *args, **kwargs: None)
    project, snapshot, admin = build_marker_project(make_user, prompts=8)
    run = runs.training_run_create(user=admin, kind="reward", base_model=tiny_model, snapshot=snapshot,
                                   config={"learning_rate": 3e-3, "epochs": 1, "prompts_per_step": 4})
    runs.training_run_execute(run_id=run.pk, worker="test:1")
    run.refresh_from_db()
    assert project_reward_model(project=project) == run.model
    prompt = project.prompts.order_by("id").first()
    fragment = text_of(as_user(reviewer).get(scores_url(project, prompt)))
    scores = [float(fragment.split(f'id="reward-{c.pk}"')[1].split('data-reward-score="')[1].split('"')[0])
              for c in prompt.candidates.order_by("id")]
    assert len(scores) == 3 and fragment.count("reward-best") == 1 and "unavailable" not in fragment
