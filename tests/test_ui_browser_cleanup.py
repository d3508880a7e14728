"""The page's cleanup of a share dir of 20,000 jobs, in headless Chromium.

A copy of the session's 20,000-job share dir (``big_share``: 5,000 jobs of
each kind, the un-retrieved ones among them), its own ``rxjobs ui`` and the
browser of :mod:`test_ui_browser`: preview every job, page through the plan,
confirm, read the result, reload it.  Nothing whose results were never
retrieved may go, and the reload must not clean up again.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from rxjobs.store import open_store
from test_ui_browser import browser_context, serving, shot  # noqa: F401 (a fixture)

from factory import make_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def big_copy(big_share, tmp_path_factory):
    """A copy of the 20,000-job share dir that this module may clean up; yields (path, ids by kind)."""
    path, made = big_share
    copy = tmp_path_factory.mktemp("big-copy") / "share"
    subprocess.run(["cp", "-a", path, str(copy)], check=True)
    yield str(copy), made
    subprocess.run(["rm", "-rf", str(copy)], check=False)


def rows(tab) -> list[str]:
    return tab.eval_on_selector_all("tr[data-job-id]", "rows => rows.map(r => r.dataset.jobId)")


def test_cleanup_of_20000_jobs_previews_pages_confirms_and_never_repeats(browser_context, big_copy):  # noqa: F811
    path, made = big_copy
    n_kept, n_gone = len(made["unretrieved"]), sum(len(v) for k, v in made.items() if k != "unretrieved")
    with serving(path) as (base, token):
        tab = browser_context.new_page()
        try:
            tab.goto(f"{base}/usage?token={token}")
            first = tab.goto(f"{base}/cleanup?all=1")  # a progress page, or the plan if it is quick
            assert first is not None and first.status == 200
            assert re.search(r"/cleanup/plans/[A-Za-z0-9_-]+$", tab.url)
            tab.wait_for_selector("#plan-summary", timeout=120_000)
            assert tab.inner_text("#would-count") == str(n_gone)
            assert tab.inner_text("#kept-count") == str(n_kept)
            assert len(rows(tab)) == 100
            assert tab.inner_text("#page-of") == f"page 1 of {(n_gone + n_kept) // 100}"
            shot(tab, "cleanup-20k-plan")
            page_one = rows(tab)
            tab.click("#next-page")
            tab.wait_for_url(re.compile(r"page=2"))
            assert len(rows(tab)) == 100 and not set(rows(tab)) & set(page_one)
            tab.click("#show-keep")
            tab.wait_for_url(re.compile(r"show=keep"))
            unretrieved = set(made["unretrieved"])
            assert set(rows(tab)) <= unretrieved and len(rows(tab)) == 100
            assert "never retrieved" in tab.inner_text("#plan")

            tab.click("#confirm-button", no_wait_after=True)
            tab.wait_for_selector("#done-summary", timeout=600_000)
            assert re.search(r"/cleanup/results/[A-Za-z0-9_-]+$", tab.url)
            assert tab.inner_text("#removed-count") == str(n_gone)
            assert tab.inner_text("#kept-count") == str(n_kept)
            kept_text = tab.inner_text("#kept")
            assert "never retrieved" in kept_text and "cleanup --force rxJob_" in kept_text
            assert set(tab.eval_on_selector_all("#kept tr[data-job-id]", "r => r.map(e => e.dataset.jobId)")
                       ) <= unretrieved
            shot(tab, "cleanup-20k-done")
            left = {name for name in os.listdir(path) if name.startswith("rxJob_")}
            assert left == unretrieved  # every un-retrieved job stays; every other one went

            # A reload shows the same result and removes nothing more.
            fresh = make_job(open_store(path), "retrieved").job_id
            tab.reload()
            tab.wait_for_selector("#done-summary")
            assert tab.inner_text("#removed-count") == str(n_gone)
            assert os.path.isdir(os.path.join(path, fresh))
        finally:
            tab.close()
