"""The web page at the HTTP level (Starlette's TestClient): every endpoint, the token, CSRF,
404s, escaping, and JSON shapes equal to the CLI's ``--json`` on the same share dir."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from rxjobs.cli import cli
from rxjobs.records import JobRecord
from rxjobs.store import open_store

from conftest import wait_until
from factory import KINDS, make_job

if os.environ.get("CI"):  # in CI a missing install is a failure, never a skip
    import starlette  # noqa: F401
pytest.importorskip("starlette", reason='the web page needs: pip install "rxjobs[ui]"')
pytest.importorskip("jinja2")
pytest.importorskip("multipart")

from starlette.testclient import TestClient  # noqa: E402

from rxjobs.ui import missing_dependencies  # noqa: E402
from rxjobs.ui.app import create_app  # noqa: E402
from rxjobs.ui.security import is_loopback  # noqa: E402

TOKEN = "test-token-0123456789"
HOSTILE = "<script>alert('pwned')</script>"

pytestmark = pytest.mark.timeout(120)


def make_hostile_job(store) -> str:
    """A finished job whose function name and console output carry a script."""
    made = make_job(store, "retrieved")
    paths = store.paths(made.job_id)
    record = JobRecord.from_json(store.read_json(paths.job_json))
    data = record.to_json()
    data["function"] = f"evil.{HOSTILE}"
    store.write_json(paths.job_json, data)
    store.write_atomic(paths.output(0), f"hello {HOSTILE}\n".encode())
    return made.job_id


@pytest.fixture
def seeded(tmp_path):
    """A share dir with two jobs of each kind (sizes differ) and a hostile job."""
    path = str(tmp_path / "share")
    store = open_store(path)
    made = {kind: [] for kind in KINDS}
    for i in range(2):
        for kind in KINDS:
            made[kind].append(make_job(store, kind, extra_bytes=100 * (i + 1)).job_id)
    hostile = make_hostile_job(store)
    return path, made, hostile


@pytest.fixture
def client(seeded):
    path, _, _ = seeded
    app = create_app(path, None, TOKEN, 0, allowed_hosts={"testserver"})
    with TestClient(app) as c:
        c.get(f"/jobs?token={TOKEN}")  # the cookie, as a browser gets it
        yield c


@pytest.fixture
def csrf(client) -> str:
    return client.app.state.secrets.csrf_token


def cli_json(path: str, *args: str):
    result = CliRunner().invoke(cli, ["--share-dir", path, *args])
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def tree(path: str) -> dict[str, int]:
    """Every file under ``path`` with its size (to show that nothing changed); the lock
    stripes of ``.locks/``, which a dry run takes like any cleanup, are not the share dir's data."""
    found = {}
    for root, _, files in os.walk(path):
        if os.path.relpath(root, path).startswith(".locks"):
            continue
        for name in files:
            full = os.path.join(root, name)
            found[os.path.relpath(full, path)] = os.stat(full).st_size
    return found


# -- the token ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/", "/jobs", "/jobs/rxJob_x", "/usage", "/cleanup", "/api/jobs",
                                 "/api/du", "/api/status?job_id=a", "/static/ui.js", "/nowhere"])
def test_every_request_without_the_token_is_refused(seeded, url):
    app = create_app(seeded[0], None, TOKEN, 0, allowed_hosts={"testserver"})
    with TestClient(app) as anonymous:
        response = anonymous.get(url)
        assert response.status_code == 403
        assert "token" in response.text
        assert anonymous.get(url + ("&" if "?" in url else "?") + "token=wrong").status_code == 403
        assert anonymous.post("/api/cleanup", json={"policy": {}}).status_code == 403


def test_token_in_the_url_becomes_a_cookie_and_leaves_the_url(seeded):
    app = create_app(seeded[0], None, TOKEN, 8123, allowed_hosts={"testserver"})
    with TestClient(app) as browser:
        response = browser.get(f"/jobs?state=failed&token={TOKEN}", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/jobs?state=failed"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("rxjobs-ui-8123=") and "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert TOKEN not in cookie
        assert browser.get("/jobs").status_code == 200


def test_scripts_use_the_token_as_a_bearer_header(seeded):
    app = create_app(seeded[0], None, TOKEN, 0, allowed_hosts={"testserver"})
    with TestClient(app) as script:
        assert script.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert script.get("/api/jobs", headers={"Authorization": "Bearer nope"}).status_code == 403
        # A bearer needs no CSRF token: a third-party page cannot make a browser send it.
        answer = script.post("/api/cleanup", json={"policy": {}, "dry_run": True},
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200


def test_a_foreign_host_header_is_refused(client):
    # DNS rebinding: a page of evil.example resolving to 127.0.0.1 names its own host.
    assert client.get("/jobs", headers={"Host": "evil.example"}).status_code == 400


def test_security_headers(client):
    response = client.get("/jobs")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


def test_create_app_needs_a_token(seeded):
    with pytest.raises(ValueError):
        create_app(seeded[0], None, "")


# -- the random path prefix (issue 23: a cookie that reaches another port is useless) ----------

PREFIX = "/0123456789abcdefABCDEF"


def test_the_page_lives_under_its_prefix_and_its_cookie_only_there(seeded):
    app = create_app(seeded[0], None, TOKEN, 8123, allowed_hosts={"testserver"}, prefix=PREFIX)
    with TestClient(app) as browser:
        assert browser.get(f"/jobs?token={TOKEN}", follow_redirects=False).status_code == 404
        response = browser.get(f"{PREFIX}/jobs?state=failed&token={TOKEN}", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"{PREFIX}/jobs?state=failed"
        assert f"Path={PREFIX}/" in response.headers["set-cookie"]
        page = browser.get(f"{PREFIX}/jobs")
        assert page.status_code == 200
        links = re.findall(r'(?:href|action|src|formaction)="(/[^"]*)"', page.text)
        assert links and all(link.startswith(f"{PREFIX}/") for link in links), links
        assert f'<meta name="rxjobs-base" content="{PREFIX}">' in page.text
        home = browser.get(f"{PREFIX}/", follow_redirects=False)
        assert home.headers["location"] == f"{PREFIX}/jobs"
        assert browser.get(f"{PREFIX}/static/ui.js").status_code == 200
        # Outside the prefix nothing answers, cookie or not.
        for url in ("/", "/jobs", "/api/jobs", f"{PREFIX}x/jobs", "/static/ui.js"):
            assert browser.get(url, follow_redirects=False).status_code == 404, url


@pytest.mark.parametrize("prefix", ["/short", "/../../etc/passwd-xxxxxxxx", "/a/b0123456789abcdef",
                                    "x" * 20])
def test_a_prefix_must_be_random_looking(seeded, prefix):
    with pytest.raises(ValueError, match="prefix"):
        create_app(seeded[0], None, TOKEN, 0, prefix=prefix)


def test_the_browser_opens_a_private_redirect_file_not_the_url(tmp_path):
    from rxjobs.ui.opener import redirect_file

    url = f"http://127.0.0.1:8123{PREFIX}/?token={TOKEN}"
    with redirect_file(url, str(tmp_path)) as path:
        assert TOKEN not in str(path)
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert os.stat(path.parent).st_mode & 0o777 == 0o700
        text = path.read_text()
        assert f'content="0;url={url}"' in text and json.dumps(url) in text
    assert not path.parent.exists()


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
                                            ("10.1.2.3", False), ("example.org", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


# -- the jobs ----------------------------------------------------------------------------------


def test_jobs_json_is_the_cli_list_json(client, seeded):
    path, made, hostile = seeded
    ours = client.get("/api/jobs?sort=submitted&per_page=1000")
    assert ours.status_code == 200
    assert ours.json() == cli_json(path, "list", "--json")
    assert ours.headers["x-total-count"] == str(4 * 2 + 1)


def test_jobs_page_pages_filters_and_sorts(client, seeded):
    path, made, hostile = seeded
    everything = [row["job_id"] for row in client.get("/api/jobs?per_page=1000").json()]
    assert everything == sorted(everything, reverse=True)  # newest first by default
    first = client.get("/api/jobs?per_page=4")
    second = client.get("/api/jobs?per_page=4&page=2")
    assert [r["job_id"] for r in first.json()] == everything[:4]
    assert [r["job_id"] for r in second.json()] == everything[4:8]
    assert first.headers["x-total-count"] == "9"
    failed = client.get("/api/jobs?state=failed").json()
    assert sorted(r["job_id"] for r in failed) == sorted(made["failed"])
    assert {r["state"] for r in failed} == {"failed"}
    by_text = client.get("/api/jobs?q=EVIL.").json()
    assert [r["job_id"] for r in by_text] == [hostile]
    assert client.get(f"/api/jobs?q={made['canceled'][0][-8:]}").json()[0]["job_id"] == made["canceled"][0]
    by_size = client.get("/api/jobs?sort=-size&per_page=1000").json()
    sizes = [r["bytes"] for r in by_size]
    assert sizes == sorted(sizes, reverse=True)
    assert client.get("/api/jobs?since=1h").headers["x-total-count"] == "9"
    assert client.get("/api/jobs?until=1h").json() == []
    html = client.get("/jobs?per_page=4&page=2")
    assert html.status_code == 200
    assert 'rel="next"' in html.text and 'rel="prev"' in html.text
    assert len(re.findall(r'<tr data-job-id=', html.text)) == 4


@pytest.mark.parametrize("query", ["state=nope", "sort=nope", "page=0", "per_page=100000", "since=yesterday",
                                   "page=x"])
def test_bad_queries_are_400(client, query):
    response = client.get(f"/api/jobs?{query}")
    assert response.status_code == 400
    assert response.json()["error"]
    assert client.get(f"/jobs?{query}").status_code == 400


def test_rows_fragment_for_live_updates(client):
    response = client.get("/jobs", headers={"X-Fragment": "rows"})
    assert response.status_code == 200
    assert response.text.lstrip().startswith("<tr")
    assert "<html" not in response.text


def test_status_json_is_the_cli_status_json(client, seeded):
    path, made, _ = seeded
    ids = [made["failed"][0], made["unretrieved"][0], "rxJob_20000101000000000000_dead"]
    ours = client.get("/api/status?" + "&".join(f"job_id={i}" for i in ids))
    assert ours.json() == cli_json(path, "status", *ids, "--json")
    assert client.get("/api/status").status_code == 400


# -- one job -----------------------------------------------------------------------------------


def test_job_page_shows_state_timeline_and_output(client, seeded):
    _, made, _ = seeded
    job_id = made["failed"][0]
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert "run 1 raised ValueError: made up" in page.text
    assert "task 0" in page.text
    assert 'id="cancel-button"' not in page.text  # it has ended
    assert client.get(f"/api/jobs/{job_id}/output").text == CliRunner().invoke(
        cli, ["--share-dir", seeded[0], "output", job_id]).stdout


@pytest.mark.parametrize("url", ["/jobs/{}", "/api/jobs/{}/output", "/api/jobs/{}/preview"])
@pytest.mark.parametrize("job_id", ["rxJob_20000101000000000000_dead", "...", "bad id!", "-x",
                                    "a" * 200, "%2e%2e%2f%2e%2e"])
def test_unknown_or_malformed_ids_are_404(client, url, job_id):
    assert client.get(url.format(job_id)).status_code == 404


def test_everything_from_the_share_dir_is_escaped(client, seeded):
    _, _, hostile = seeded
    for url in (f"/jobs/{hostile}", "/jobs", "/jobs?q=evil", f"/cleanup?job_id={hostile}"):
        text = client.get(url).text
        assert HOSTILE not in text, url
    page = client.get(f"/jobs/{hostile}").text
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page
    output = client.get(f"/api/jobs/{hostile}/output")
    assert output.headers["content-type"].startswith("text/plain")


def test_results_preview_only_on_request_and_bounded(client, seeded):
    _, made, _ = seeded
    job_id = made["unretrieved"][0]
    plain = client.get(f"/jobs/{job_id}").text
    assert 'id="preview"' not in plain
    page = client.get(f"/jobs/{job_id}?preview=1").text
    assert 'id="preview"' in page and "<code>15</code>" in page  # triple(5)
    answer = client.get(f"/api/jobs/{job_id}/preview").json()
    assert [run["repr"] for run in answer["runs"]] == [repr(3 * i) for i in range(6)]
    assert answer["n_runs"] == 6 and not answer["truncated"]
    # A look, not a collection: the job is still un-retrieved.
    assert client.get(f"/api/status?job_id={job_id}").json()[0]["state"] == "finished"
    store = open_store(seeded[0])
    assert "retrieved" not in store.job_entries(job_id)


def test_preview_refuses_a_share_dir_others_can_write(client, seeded):
    path, made, _ = seeded
    os.chmod(path, 0o777)
    try:
        answer = client.get(f"/api/jobs/{made['unretrieved'][0]}/preview")
    finally:
        os.chmod(path, 0o700)
    assert answer.status_code == 409
    assert "chmod" in answer.json()["error"] or "writable" in answer.json()["error"]


def test_gets_never_change_anything(client, seeded):
    path, made, hostile = seeded
    before = tree(path)
    for url in ["/", "/jobs", "/jobs?state=finished", f"/jobs/{made['unretrieved'][0]}?preview=1",
                "/usage?older_than=0s&force=1", "/cleanup?all=1&force=1",
                f"/cleanup?job_id={made['retrieved'][0]}", "/api/du", "/api/jobs",
                f"/api/jobs/{made['unretrieved'][0]}/preview", f"/jobs/{made['failed'][0]}/cancel",
                "/api/cleanup"]:
        assert client.get(url).status_code in (200, 303, 405), url
    assert tree(path) == before


# -- actions -----------------------------------------------------------------------------------


def test_cancel_needs_csrf_and_says_an_ended_job_had_ended(client, csrf, seeded):
    _, made, _ = seeded
    job_id = made["finished" if "finished" in made else "unretrieved"][0]
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 403
    assert client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": "wrong"}).status_code == 403
    refused = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": csrf},
                          headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403
    done = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].endswith("notice=not-canceled")
    assert "already ended" in client.get(done.headers["location"]).text
    api = client.post(f"/api/jobs/{job_id}/cancel", headers={"X-CSRF-Token": csrf})
    assert api.json() == {"job_id": job_id, "canceled": False, "state": "finished"}
    assert client.post("/jobs/bad!/cancel", data={"csrf_token": csrf}).status_code == 404


def previewed(client, query: str):
    """Preview a cleanup: follow ``GET /cleanup?query`` to its plan page, until the plan is ready."""
    answer = client.get(f"/cleanup?{query}", follow_redirects=False)
    assert answer.status_code == 303, answer.text
    plan_url = answer.headers["location"]
    assert re.fullmatch(r"/cleanup/plans/[A-Za-z0-9_-]+", plan_url)
    page = wait_until(lambda: (lambda r: r if "Refresh" not in r.headers else None)(client.get(plan_url)),
                      30, "the plan")
    assert page.status_code == 200, page.text
    return plan_url, page, re.search(r'name="plan_id" value="([^"]+)"', page.text)


def test_cleanup_preview_then_confirm_removes_exactly_those(client, csrf, seeded):
    path, made, _ = seeded
    store = open_store(path)
    named = [made["retrieved"][0], made["failed"][0], made["canceled"][0], made["unretrieved"][0]]
    gone = named[:3]
    plan_url, preview, plan_id = previewed(client, "&".join(f"job_id={i}" for i in named))
    freed = sum(store.usage(i).bytes for i in gone)
    assert 'id="would-count">3<' in preview.text and 'id="kept-count">1<' in preview.text
    assert f'data-bytes="{freed}"' in preview.text
    assert "never retrieved" in preview.text
    form = {"csrf_token": csrf, "plan_id": plan_id.group(1)}
    assert client.post("/cleanup", data={**form, "csrf_token": "x"}).status_code == 403
    assert all(store.is_job_dir(i) for i in named)
    done = client.post("/cleanup", data=form, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith("/cleanup/results/")
    result = client.get(done.headers["location"])
    assert 'id="removed-count">3<' in result.text and 'id="kept-count">1<' in result.text
    assert "never retrieved" in result.text  # the kept job, why, and how to remove it anyway
    assert f"rxjobs --share-dir {path} cleanup --force {made['unretrieved'][0]}" in result.text
    assert [store.is_job_dir(i) for i in named] == [False, False, False, True]


def test_forced_cleanup_needs_the_confirmation(client, csrf, seeded):
    path, made, _ = seeded
    store = open_store(path)
    job_id = made["unretrieved"][0]
    _, preview, plan_id = previewed(client, f"job_id={job_id}&force=1")
    assert 'id="force-warning"' in preview.text
    assert "results, never retrieved, are deleted" in preview.text
    form = {"csrf_token": csrf, "plan_id": plan_id.group(1)}
    assert client.post("/cleanup", data=form).status_code == 400  # no confirmation box
    assert store.is_job_dir(job_id)
    done = client.post("/cleanup", data={**form, "confirm_force": "1"})
    assert done.status_code == 200 and 'id="removed-count">1<' in done.text
    assert not store.is_job_dir(job_id)


def test_cleanup_json_is_the_cli_cleanup_json(client, csrf, seeded):
    path, made, _ = seeded
    ours = client.post("/api/cleanup", json={"policy": {}, "dry_run": True},
                       headers={"X-CSRF-Token": csrf}).json()
    theirs = cli_json(path, "cleanup", "--all", "--dry-run", "--json")
    assert ours.pop("plan")["to_remove"] == theirs["would_remove"]  # a preview also gives its plan
    assert ours == theirs
    ours = client.post("/api/cleanup", json={"policy": {"older_than": "0s", "keep_last": 2},
                                             "dry_run": True}, headers={"X-CSRF-Token": csrf}).json()
    theirs = cli_json(path, "cleanup", "--older-than", "0s", "--keep-last", "2", "--dry-run", "--json")
    assert ours.pop("plan")["to_remove"] == theirs["would_remove"]
    assert ours == theirs
    ids = [made["failed"][1], made["unretrieved"][1]]
    ours = client.post("/api/cleanup", json={"job_ids": ids}, headers={"X-CSRF-Token": csrf}).json()
    assert (ours["removed"], ours["kept"]) == (1, 1)
    assert set(ours) == set(cli_json(path, "cleanup", "--all", "--dry-run", "--json")) - {
        "policy", "picked", "protected"}
    for bad in ({}, {"job_ids": ["bad id"]}, {"job_ids": ids, "policy": {}}, [1],
                {"policy": {"older_than": "soon"}}, {"policy": {"nope": 1}}):
        assert client.post("/api/cleanup", json=bad, headers={"X-CSRF-Token": csrf}).status_code == 400


def test_usage_json_is_the_cli_du_json_and_the_page_shows_it(client, seeded):
    path, _, _ = seeded
    ours = client.get("/api/du?older_than=0s").json()
    theirs = cli_json(path, "du", "--older-than", "0s", "--json")
    assert ours == theirs
    page = client.get("/usage")
    assert page.status_code == 200
    for part in ('id="by-state"', 'id="by-age"', 'id="largest"', 'id="policies"', "cleanup --all"):
        assert part in page.text
    _, preview, _ = previewed(client, "older_than=0s&keep_last=3")
    assert "cleanup --older-than 0s --keep-last 3" in preview.text


def test_a_number_without_a_unit_is_refused_by_the_page(client, csrf, seeded):
    for query in ("/cleanup?older_than=30", "/cleanup?max_total_size=500", "/api/du?older_than=30"):
        answer = client.get(query)
        assert answer.status_code == 400 and "needs a unit" in answer.text, query
    for policy in ({"older_than": 30}, {"older_than": "30"}, {"max_total_size": 50}):
        answer = client.post("/api/cleanup", json={"policy": policy, "dry_run": True},
                             headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 400 and "needs a unit" in answer.text, policy


def test_nothing_selected_is_a_400_not_every_job(client):
    assert client.get("/cleanup?selected=1").status_code == 400


# -- the command -------------------------------------------------------------------------------


def test_ui_command_refuses_a_remote_host_without_the_flag(tmp_path):
    result = CliRunner().invoke(cli, ["--share-dir", str(tmp_path / "s"), "ui", "--host", "0.0.0.0",
                                      "--no-browser"])
    assert result.exit_code == 2
    assert "--allow-remote" in result.output


def test_ui_command_says_how_to_install_the_extra(tmp_path, monkeypatch):
    import rxjobs.ui

    monkeypatch.setattr(rxjobs.ui, "missing_dependencies", lambda: ["starlette"])
    result = CliRunner().invoke(cli, ["--share-dir", str(tmp_path / "s"), "ui", "--no-browser"])
    assert result.exit_code == 1
    assert 'pip install "rxjobs[ui]"' in result.output
    assert missing_dependencies() == []


def test_ui_command_refuses_a_directory_that_is_no_share_dir(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["--share-dir", str(tmp_path / "home"), "ui", "--no-browser"])
    assert result.exit_code == 1
    assert "rxjobs: error:" in result.output
    assert Path(tmp_path / "home" / "notes.txt").exists()


def test_rows_json_has_a_version_and_an_unchanged_page_is_a_304(client, seeded):
    path, made, _ = seeded
    first = client.get("/api/rows?state=failed&sort=-size")
    assert first.status_code == 200
    body = first.json()
    assert body["version"] == first.headers["etag"] and body["total"] == 2
    assert {row["job_id"] for row in body["rows"]} == set(made["failed"])
    assert {row["state"] for row in body["rows"]} == {"failed"}
    assert [row["bytes"] for row in body["rows"]] == sorted((row["bytes"] for row in body["rows"]),
                                                            reverse=True)
    again = client.get("/api/rows?state=failed&sort=-size", headers={"If-None-Match": body["version"]})
    assert again.status_code == 304 and not again.content
    page = client.get("/jobs?state=failed&sort=-size")
    assert html.unescape(re.search(r'data-version="([^"]*)"', page.text).group(1)) == body["version"]
    # A removed job changes the version: the page is sent again, without it.
    shutil.rmtree(Path(path) / made["failed"][0])
    changed = client.get("/api/rows?state=failed&sort=-size", headers={"If-None-Match": body["version"]})
    assert changed.status_code == 200
    assert [row["job_id"] for row in changed.json()["rows"]] == [made["failed"][1]]


def test_a_refresh_of_a_filtered_view_reads_only_the_jobs_that_have_not_ended(seeded, monkeypatch):
    """The catalog reads an ended job once: a second refresh of a view filtered by state and
    sorted by size reads no job, as a refresh of the default view reads only its page."""
    from rxjobs import jobs
    from rxjobs.ui import views

    path, made, _ = seeded
    store = open_store(path)
    looked: list[str] = []
    look = jobs.look_at_job
    monkeypatch.setattr(jobs, "look_at_job", lambda store, job_id, *a, **k: (
        looked.append(job_id), look(store, job_id, *a, **k))[1])
    catalog = views.JobCatalog()
    query = views.JobsQuery(states=("failed", "canceled"), sort="-size")
    first = views.jobs_page(store, query, catalog)
    assert len(set(looked)) == 9  # every job, once for its state
    looked.clear()
    again = views.jobs_page(store, query, catalog)
    assert looked == []
    assert [r.job_id for r in again.rows] == [r.job_id for r in first.rows]
    assert {r.job_id for r in first.rows} == set(made["failed"] + made["canceled"])
    assert views.jobs_page(store, views.JobsQuery(), views.JobCatalog()).total == 9
