"""In a real browser: an admin freezes a snapshot on the Datasets page and downloads an export
with its progress shown (Debian's Chromium through Playwright, as tests/e2e)."""
from __future__ import annotations

import json

import pytest


pytestmark = pytest.mark.e2e


def test_freeze_and_download_with_progress(page, sign_in, make_user, screenshot_dir, tmp_path):
    from tests.training.helpers import build_labelled_project

    labelled = build_labelled_project(make_user)
    sign_in(labelled.admin)
    page.goto(f"/projects/{labelled.project.slug}/snapshots/")
    page.get_by_label("Leave out imported data").check()
    page.get_by_role("button", name="Freeze a snapshot").click()
    page.wait_for_url("**/snapshots/*/")
    assert page.get_by_text("Snapshot").first.is_visible()

    item = page.locator("[data-export-item]").filter(has_text="Pairs (prompt, chosen, rejected) as strings")
    with page.expect_download() as download:
        item.get_by_role("button", name="Download").click()
    status = item.locator(".export-status")
    status.filter(has_text="Done").wait_for()
    assert "5 pairs" in status.inner_text()
    target = tmp_path / "pairs.jsonl"
    download.value.save_as(target)
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 5 and download.value.suggested_filename.endswith("-preference.jsonl")
    page.screenshot(path=str(screenshot_dir / "datasets.png"), full_page=True)


def test_the_hf_export_is_built_by_a_job_then_downloaded(page, sign_in, make_user, tmp_path, jobs_inline):
    """hf answers 202 with its job: the page follows the job, then downloads the finished file."""
    import tarfile

    from tests.training.helpers import build_labelled_project
    from training.models import ExportJob
    from training.snapshots import snapshot_create

    labelled = build_labelled_project(make_user)
    snapshot, _ = snapshot_create(user=labelled.admin, project=labelled.project)
    sign_in(labelled.admin)
    page.goto(f"/snapshots/{snapshot.sha256}/")
    page.select_option("#export-rows", "sft")
    item = page.locator("[data-export-item]").filter(has=page.locator("code", has_text="hf"))
    with page.expect_download(timeout=60_000) as download:
        item.get_by_role("button", name="Download").click()
    item.locator(".export-status").filter(has_text="Done").wait_for(timeout=60_000)
    target = tmp_path / "hf.tar"
    download.value.save_as(target)
    with tarfile.open(target) as tar:
        assert any(name.endswith("/README.md") for name in tar.getnames())
    assert download.value.suggested_filename == f"snapshot-{snapshot.sha256[:12]}-hf-sft.tar"
    assert ExportJob.objects.get().status == "succeeded"
