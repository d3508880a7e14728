"""Cleanup plans of the web page: the pure parts by tables, then the flow through Starlette's client.

A preview is a plan kept on the server (``rxjobs.ui.plans``); confirming sends
its id only, refuses a plan whose jobs changed, and redirects to a stored
result that a reload shows again without doing anything.
"""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime, timezone

import pytest

from rxjobs.records import mark_retrieved
from rxjobs.status import RxRemoteJobStatus
from rxjobs.store import open_store

from conftest import wait_until
from factory import make_job

if os.environ.get("CI"):  # in CI a missing install is a failure, never a skip
    import starlette  # noqa: F401
pytest.importorskip("starlette", reason='the web page needs: pip install "rxjobs[ui]"')
pytest.importorskip("multipart")

from starlette.testclient import TestClient  # noqa: E402

from rxjobs.cleanup import CleanupEntry, CleanupOutcome  # noqa: E402
from rxjobs.retention import RetentionPolicy, SurveyedJob  # noqa: E402
from rxjobs.ui import plans  # noqa: E402
from rxjobs.ui.app import create_app  # noqa: E402

TOKEN = "test-token-0123456789"
FINISHED, RUNNING = RxRemoteJobStatus.FINISHED, RxRemoteJobStatus.RUNNING
WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)

pytestmark = pytest.mark.timeout(120)


def surveyed(status=FINISHED, retrieved=True, **kw) -> SurveyedJob:
    return SurveyedJob(kw.pop("job_id", "rxJob_a"), WHEN, status, kw.pop("reason", ""), retrieved, **kw)


# -- pure: tables ------------------------------------------------------------------------------


@pytest.mark.parametrize("job, force, remove, forced, force_removes", [
    (surveyed(), False, True, "", True),
    (surveyed(retrieved=False), False, False, "", True),
    (surveyed(retrieved=False), True, True, "its results, never retrieved, are deleted", True),
    (surveyed(RUNNING, False), False, False, "", True),
    (surveyed(RUNNING, False), True, True, "it is canceled: the work in progress is lost", True),
    (surveyed(foreign=True), True, False, "", False),
    (surveyed(newer_format=True), True, False, "", False),
])
def test_plan_job_says_what_the_rules_decide(job, force, remove, forced, force_removes):
    planned = plans.plan_job(job, force)
    assert (planned.remove, planned.forced, planned.force_removes) == (remove, forced, force_removes)
    assert planned.reason  # every decision says why
    assert planned.bytes == (job.bytes if remove else 0)


@pytest.mark.parametrize("before, after, changed", [
    (surveyed(), surveyed(), False),
    (surveyed(), surveyed(files=9, bytes=10**6), False),  # size alone does not decide the rules
    (surveyed(retrieved=False), surveyed(), True),  # its results were retrieved meanwhile
    (surveyed(RUNNING, False), surveyed(retrieved=False), True),  # still kept, but it ended
    (surveyed(), surveyed(expired=True), True),
    (surveyed(), surveyed(foreign=True), True),
    (surveyed(), None, True),  # gone
])
def test_a_plan_is_stale_when_what_the_rules_decide_on_changed(before, after, changed):
    planned = [plans.plan_job(before, False)]
    now = {} if after is None else {after.job_id: plans.fingerprint(after, False)}
    assert plans.changed_jobs(planned, now) == (["rxJob_a"] if changed else [])


@pytest.mark.parametrize("total, asked, expected", [
    (0, 1, (1, 1, 0, 0)),
    (250, 1, (1, 3, 0, 100)),
    (250, 3, (3, 3, 200, 250)),
    (250, 9, (3, 3, 200, 250)),
    (200, 0, (1, 2, 0, 100)),
])
def test_pages(total, asked, expected):
    page = plans.Page.of(total, asked)
    assert (page.number, page.pages, page.start, page.stop) == expected


@pytest.mark.parametrize("changed, says", [
    (["a"], "1 job changed since the preview (a); nothing was removed: preview again"),
    (list("abcdefg"), "7 jobs changed since the preview (a, b, c, d, e, …); nothing was removed"),
])
def test_stale_message(changed, says):
    assert plans.stale_message(changed).startswith(says)


def test_removal_command_quotes_the_share_dir():
    assert plans.removal_command("/a b", "rxJob_x") == "rxjobs --share-dir '/a b' cleanup --force rxJob_x"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_book_bounds_plans_and_results_and_ties_them_to_a_session():
    clock = Clock()
    book = plans.PlanBook(max_plans=2, plan_seconds=60, max_results=2, result_seconds=120, clock=clock)
    first = book.new_plan("s1", "/share", False, "cleanup --all", "")
    second = book.new_plan("s1", "/share", False, "cleanup --all", "")
    with pytest.raises(plans.TooManyPlans):  # both still being made: none is dropped
        book.new_plan("s1", "/share", False, "cleanup --all", "")
    book.finish(first, [])
    third = book.new_plan("s2", "/share", False, "cleanup --all", "")  # drops the idle first
    assert book.plan("s1", first.plan_id) is None
    assert book.plan("s1", second.plan_id) is second
    assert book.plan("s2", second.plan_id) is None  # another session's
    assert book.plan("s2", third.plan_id) is third
    clock.now = 61
    assert book.plan("s1", second.plan_id) is None  # too old
    results = []
    for _ in range(3):
        plan = book.new_plan("s1", "/share", False, "cleanup --all", "")
        book.finish(plan, [])
        assert book.claim(plan) and not book.claim(plan)  # one confirmation at a time
        result = plans.result_of(plan, [], plans.new_result_id())
        book.release(plan, result)
        assert not book.claim(plan)  # done: never again
        assert plan.result_id == result.result_id
        results.append(result)
        clock.now += 1
    assert book.result("s1", results[0].result_id) is None  # the oldest of 3 went
    assert book.result("s1", results[2].result_id) is results[2]
    assert book.result("s2", results[2].result_id) is None
    clock.now += 121
    assert book.result("s1", results[2].result_id) is None


def test_a_result_lists_every_covered_job_once_and_says_why_each_kept_one_stayed():
    jobs = [surveyed(job_id="rxJob_a"), surveyed(job_id="rxJob_b", retrieved=False),
            surveyed(job_id="rxJob_c"), surveyed(job_id="rxJob_d", foreign=True)]
    plan = plans.Plan("p", "s", "/share", False, "cleanup --all", "")
    plan.jobs = [plans.plan_job(job, False) for job in jobs]
    assert [j.job_id for j in plan.to_remove] == ["rxJob_a", "rxJob_c"]
    entries = [CleanupEntry("rxJob_a", "/share", "finished", CleanupOutcome.REMOVED, "retrieved", 3, 30),
               CleanupEntry("rxJob_c", "/share", "running", CleanupOutcome.KEPT, "running: not removed")]
    result = plans.result_of(plan, entries, "r")
    assert [e.job_id for e in result.removed] == ["rxJob_a"]
    assert [(k.job_id, k.command != "") for k in result.kept] == [
        ("rxJob_b", True), ("rxJob_d", False), ("rxJob_c", True)]
    assert "never retrieved" in result.kept[0].reason
    assert result.kept[0].command == "rxjobs --share-dir /share cleanup --force rxJob_b"
    data = result.to_json()
    assert (data["removed"], data["kept"], data["bytes_freed"]) == (1, 3, 30)
    assert len(data["jobs"]) == 4


@pytest.mark.parametrize("ids, force, says", [
    (["rxJob_a"], False, "cleanup rxJob_a"),
    (["rxJob_a", "rxJob_b", "rxJob_a"], True, "cleanup --force of 2 named jobs"),
])
def test_describe_named(ids, force, says):
    assert plans.describe(ids, RetentionPolicy(force=force)) == says


def test_session_ids():
    made = plans.new_session_id()
    assert plans.is_session_id(made)
    for bad in ("", "x" * 23, "x" * 24 + "y", "a;b=c" + "x" * 19):
        assert not plans.is_session_id(bad)


# -- the flow, through Starlette's client ------------------------------------------------------


@pytest.fixture
def share(tmp_path):
    path = str(tmp_path / "share")
    store = open_store(path)
    made = {kind: [make_job(store, kind).job_id for _ in range(2)]
            for kind in ("retrieved", "failed", "unretrieved")}
    return path, made


def browser(path: str) -> TestClient:
    client = TestClient(create_app(path, None, TOKEN, 0, allowed_hosts={"testserver"}))
    client.get(f"/jobs?token={TOKEN}")  # the cookie, as a browser gets it
    return client


@pytest.fixture
def client(share):
    with browser(share[0]) as c:
        yield c


def csrf_of(client) -> str:
    return client.app.state.secrets.csrf_token


def preview(client, query: str) -> tuple[str, str]:
    """The plan page's URL and plan id of a preview, once ready."""
    answer = client.get(f"/cleanup?{query}", follow_redirects=False)
    assert answer.status_code == 303
    url = answer.headers["location"]
    page = wait_until(lambda: (lambda r: r if "Refresh" not in r.headers else None)(client.get(url)),
                      30, "the plan")
    return url, re.search(r'name="plan_id" value="([^"]+)"', page.text).group(1)


def test_a_stale_plan_is_refused_and_nothing_is_removed(client, share):
    path, made = share
    store = open_store(path)
    _, plan_id = preview(client, "all=1")
    mark_retrieved(store, made["unretrieved"][0])  # a job the plan keeps is now removable
    answer = client.post("/cleanup", data={"csrf_token": csrf_of(client), "plan_id": plan_id})
    assert answer.status_code == 409
    assert "1 job changed since the preview" in answer.text and "preview again" in answer.text
    assert 'href="/cleanup?all=1" id="preview-again"' in answer.text
    assert all(store.is_job_dir(i) for ids in made.values() for i in ids)
    # A job the plan removes vanished meanwhile: stale too.
    _, plan_id = preview(client, "all=1")
    shutil.rmtree(os.path.join(path, made["failed"][0]))
    answer = client.post("/cleanup", data={"csrf_token": csrf_of(client), "plan_id": plan_id})
    assert answer.status_code == 409
    assert store.is_job_dir(made["retrieved"][0])


def test_confirm_redirects_to_a_result_a_reload_never_repeats(client, share):
    path, made = share
    store = open_store(path)
    _, plan_id = preview(client, "all=1")
    form = {"csrf_token": csrf_of(client), "plan_id": plan_id}
    done = client.post("/cleanup", data=form, follow_redirects=False)
    assert done.status_code == 303
    result_url = done.headers["location"]
    first = client.get(result_url)
    assert 'id="removed-count">4<' in first.text and 'id="kept-count">2<' in first.text
    # New jobs like those removed: a repeat would remove them; nothing repeats.
    later = make_job(store, "retrieved").job_id
    assert client.get(result_url).text.count("rxJob_") == first.text.count("rxJob_")
    again = client.post("/cleanup", data=form, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == result_url
    assert store.is_job_dir(later)
    assert [store.is_job_dir(i) for i in made["unretrieved"]] == [True, True]


def test_another_session_sees_no_plan_and_no_result(client, share):
    path, _ = share
    plan_url, plan_id = preview(client, "all=1")
    with browser(path) as other:
        assert other.get(plan_url).status_code == 404
        assert other.post("/cleanup", data={"csrf_token": csrf_of(other), "plan_id": plan_id}
                          ).status_code == 404
    done = client.post("/cleanup", data={"csrf_token": csrf_of(client), "plan_id": plan_id},
                       follow_redirects=False)
    with browser(path) as other:
        assert other.get(done.headers["location"]).status_code == 404
    assert client.get(done.headers["location"]).status_code == 200


def test_previews_are_bounded(client, share, monkeypatch):
    app_page_book = plans.PlanBook(max_plans=1)
    # The app's book, reached the way the page holds it: one per JobsPage.
    from rxjobs.ui import app as app_module

    monkeypatch.setattr(app_module.plans, "PlanBook", lambda: app_page_book)
    path, _ = share
    with browser(path) as fresh:
        held = app_page_book.new_plan("someone", path, False, "cleanup --all", "")  # being made
        answer = fresh.get("/cleanup?all=1", follow_redirects=False)
        assert answer.status_code == 429 and "try again" in answer.text
        app_page_book.finish(held, [])
        assert fresh.get("/cleanup?all=1", follow_redirects=False).status_code == 303


def test_the_plan_page_is_paged(tmp_path):
    path = str(tmp_path / "share")
    store = open_store(path)
    ids = [make_job(store, "retrieved", n_tasks=1, runs_per_task=1).job_id for _ in range(105)]
    with browser(path) as client:
        url, _ = preview(client, "all=1")
        first = client.get(url)
        assert 'id="would-count">105<' in first.text and "page 1 of 2" in first.text
        assert first.text.count('data-job-id="') == 100
        second = client.get(f"{url}?page=2")
        assert second.text.count('data-job-id="') == 5 and "page 2 of 2" in second.text
        shown = set(re.findall(r'data-job-id="([^"]+)"', first.text + second.text))
        assert shown == set(ids)
        assert client.get(f"{url}?show=keep").text.count('data-job-id="') == 0


def test_the_json_api_previews_a_plan_and_confirms_it_by_id(share):
    path, made = share
    store = open_store(path)
    with browser(path) as script:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        script.cookies.clear()
        answer = script.post("/api/cleanup", json={"policy": {}, "dry_run": True}, headers=headers).json()
        plan = answer["plan"]
        assert (plan["to_remove"], plan["to_keep"]) == (4, 2) == (answer["would_remove"], answer["kept"])
        assert all(store.is_job_dir(i) for ids in made.values() for i in ids)
        done = script.post("/api/cleanup", json={"plan_id": plan["plan_id"]}, headers=headers).json()
        assert (done["removed"], done["kept"]) == (4, 2)
        kept = [job for job in done["jobs"] if job["outcome"] == "kept"]
        assert sorted(job["job_id"] for job in kept) == sorted(made["unretrieved"])
        assert all(job["command"].endswith(f"cleanup --force {job['job_id']}") for job in kept)
        repeat = script.post("/api/cleanup", json={"plan_id": plan["plan_id"]}, headers=headers).json()
        assert repeat["repeated"] is True and repeat["result_id"] == done["result_id"]
        assert script.post("/api/cleanup", json={"plan_id": "nope"}, headers=headers).status_code == 404
        assert [store.is_job_dir(i) for i in made["unretrieved"]] == [True, True]
        # A stale plan: 409 with where to preview again, and nothing removed.
        plan = script.post("/api/cleanup", json={"job_ids": made["unretrieved"], "dry_run": True},
                           headers=headers).json()["plan"]
        assert (plan["to_remove"], plan["to_keep"]) == (0, 2)
        mark_retrieved(store, made["unretrieved"][1])
        stale = script.post("/api/cleanup", json={"plan_id": plan["plan_id"]}, headers=headers)
        assert stale.status_code == 409
        assert stale.json()["error"].startswith("1 job changed since the preview")
        assert "preview_again" in stale.json()
    assert [store.is_job_dir(i) for i in made["unretrieved"]] == [True, True]


def test_a_plan_being_made_shows_a_page_that_reloads_until_it_is_ready(share, monkeypatch):
    path, made = share
    book = plans.PlanBook()
    from rxjobs.ui import app as app_module

    monkeypatch.setattr(app_module.plans, "PlanBook", lambda: book)
    with browser(path) as client:
        preview(client, "all=1")  # the session's cookie
        session = client.cookies.get("rxjobs-ui-0-session")
        plan = book.new_plan(session, path, False, "cleanup --all", "all=1")  # not made yet
        waiting = client.get(f"/cleanup/plans/{plan.plan_id}")
        assert waiting.status_code == 200 and waiting.headers["Refresh"] == "1"
        assert "Looking at the jobs" in waiting.text and 'name="plan_id"' not in waiting.text
        refused = client.post("/cleanup", data={"csrf_token": csrf_of(client), "plan_id": plan.plan_id})
        assert refused.status_code == 409 and "not ready yet" in refused.text
        book.finish(plan, plans.plan_jobs(open_store(path), None, RetentionPolicy()))
        ready = client.get(f"/cleanup/plans/{plan.plan_id}")
        assert "Refresh" not in ready.headers and 'id="would-count">4<' in ready.text
    assert all(open_store(path).is_job_dir(i) for ids in made.values() for i in ids)
