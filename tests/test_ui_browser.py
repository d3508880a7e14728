"""The web page in a real browser: Debian's headless Chromium driven by Playwright.

One server (``rxjobs ui`` in a subprocess, on a free loopback port) over a
seeded share dir, one over the session's 20,000-job share dir (``big_share``)
for what the page must do at scale, and one browser with a fresh profile, for
the module; all are stopped at teardown, whatever happened.  Each test saves a screenshot
under ``tests/artifacts/``.  Never ``playwright install``: the browser is
Debian's ``chromium`` (``.ci/install-system-deps``).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rxjobs import RxLocalParallel, rx_exec
from rxjobs.store import open_store
from test_ui import HOSTILE, make_hostile_job

from engine_contract import print_every_second
from factory import make_job

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
ARTIFACTS = Path(__file__).parent / "artifacts"
SRC = Path(__file__).resolve().parent.parent / "src"

if os.environ.get("CI"):  # in CI a missing browser or driver is a failure, never a skip
    import playwright.sync_api  # noqa: F401
    import starlette  # noqa: F401
    assert os.path.exists(CHROMIUM), "install Debian's chromium (.ci/install-system-deps)"
pytest.importorskip("starlette", reason='the web page needs: pip install "rxjobs[ui]"')
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need: pip install playwright")
expect = sync_api.expect
if not os.path.exists(CHROMIUM):
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.timeout(90)


def print_steps(n: int, pause: float) -> int:
    """A job's run: says which step it is at, then works for a while."""
    print(f"step {n} done")
    deadline = time.monotonic() + pause
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return n


def fail_every_third(x: int) -> int:
    """A job's run: raises for x = 2, 5, 8 (3 of 9 runs), doubles x otherwise."""
    if x % 3 == 2:
        raise ValueError(f"run {x} fails on purpose, with a message long enough to need a scroll bar " * 2)
    return 2 * x


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def share(tmp_path_factory):
    """A share dir with jobs in every terminal state and a hostile one."""
    path = str(tmp_path_factory.mktemp("ui-browser") / "share")
    store = open_store(path)
    made = {kind: [make_job(store, kind, extra_bytes=500 * (i + 1)).job_id for i in range(3)]
            for kind in ("retrieved", "failed", "canceled", "unretrieved")}
    made["hostile"] = [make_hostile_job(store)]
    yield path, made
    from conftest import kill_processes_mentioning

    kill_processes_mentioning(path)


@pytest.fixture(scope="module")
def partly_failed(share) -> str:
    """A real job on the local engine, 3 of whose 9 runs raised; its id."""
    path, _ = share
    cc = RxLocalParallel(num_workers=2, wait=False, share_dir=path)
    job = rx_exec(fail_every_third, x=list(range(9)), compute_context=cc)
    store = open_store(path)
    from rxjobs import jobs

    wait_for(lambda: jobs.job_status(store, job.job_id).status.is_terminal(), 60, "the job to end")
    return job.job_id


@contextlib.contextmanager
def serving(path: str):
    """``rxjobs ui`` over ``path`` on a free loopback port; yields (base URL, token); stopped after."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "rxjobs", "--share-dir", path, "ui", "--no-browser",
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            match = re.search(r"(http://127\.0\.0\.1:\d+/[A-Za-z0-9_-]+)/\?token=(\S+)", line)
            if match:
                url = match.group(1), match.group(2)
        assert url is not None, "the server printed no URL"
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(share):
    """``rxjobs ui`` on a free loopback port; yields (base URL, token). Stopped at teardown."""
    with serving(share[0]) as url:
        yield url


@pytest.fixture(scope="module")
def big_server(big_share):
    """``rxjobs ui`` over the 20,000-job share dir; yields (base URL, token). Stopped at teardown."""
    with serving(big_share[0]) as url:
        yield url


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    """A headless Chromium with a fresh profile; closed at teardown."""
    ARTIFACTS.mkdir(exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")
    manager = sync_api.sync_playwright().start()
    try:
        context = manager.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 900})
        try:
            context.set_default_timeout(15000)
            yield context
        finally:
            context.close()
    finally:
        manager.stop()


@pytest.fixture
def page(browser_context, server):
    """A tab that has been let in with the token (the cookie is set)."""
    base, token = server
    tab = browser_context.new_page()
    dialogs = []
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    tab.goto(f"{base}/jobs?token={token}")
    tab.dialogs = dialogs
    try:
        yield tab
    finally:
        tab.close()


def shot(tab, name: str) -> None:
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def job_ids_on(tab) -> list[str]:
    return tab.eval_on_selector_all("#job-rows tr[data-job-id]", "rows => rows.map(r => r.dataset.jobId)")


def test_without_the_token_the_page_is_refused(browser_context, server):
    base, _ = server
    stranger = browser_context.browser.new_context() if browser_context.browser else None
    tab = (stranger or browser_context).new_page()
    try:
        if stranger is None:
            browser_context.clear_cookies()
        response = tab.goto(f"{base}/jobs")
        assert response.status == 403
        assert "token" in tab.content()
        shot(tab, "refused")
    finally:
        tab.close()
        if stranger is not None:
            stranger.close()


def test_jobs_appear_filter_and_page(page, share, server):
    path, made = share
    base, _ = server
    assert page.url == f"{base}/jobs"  # the token left the address bar
    ids = job_ids_on(page)
    expected = {i for ids_ in made.values() for i in ids_}
    assert expected <= set(ids)
    shot(page, "jobs")
    page.check("input[name=state][value=failed]")
    page.click("#filters button[type=submit]")
    page.wait_for_url(re.compile(r"state=failed"))
    assert sorted(job_ids_on(page)) == sorted(made["failed"])
    states = page.eval_on_selector_all("#job-rows .state", "els => els.map(e => e.textContent)")
    assert set(states) == {"failed"}
    page.goto(f"{base}/jobs?per_page=5")
    first = job_ids_on(page)
    assert len(first) == 5
    page.click("#next-page")
    page.wait_for_url(re.compile(r"page=2"))
    second = job_ids_on(page)
    assert second and not set(first) & set(second)
    assert "page 2 of" in page.inner_text("#page-of")
    shot(page, "jobs-page-2")


def test_hostile_text_renders_as_text(page, share, server):
    _, made = share
    base, _ = server
    hostile = made["hostile"][0]
    page.goto(f"{base}/jobs/{hostile}")
    assert page.inner_text("#job-function") == f"evil.{HOSTILE}"
    assert HOSTILE in page.inner_text("#output")
    assert page.dialogs == []
    assert page.evaluate("document.querySelectorAll('main script').length") == 0
    page.goto(f"{base}/jobs?q=evil")
    assert HOSTILE in page.inner_text("#job-rows")
    assert page.dialogs == []
    shot(page, "hostile")


def test_running_job_output_grows_live_and_states_update(page, share, server):
    path, _ = share
    base, _ = server
    cc = RxLocalParallel(num_workers=1, wait=False, share_dir=path)
    job = rx_exec(print_steps, n=list(range(6)), pause=[1.0] * 6, task_chunk_size=1, compute_context=cc)
    page.goto(f"{base}/jobs/{job.job_id}")
    page.evaluate("window.__notReloaded = true")
    expect(page.locator("#output")).to_contain_text("step 1 done", timeout=30000)
    early = page.inner_text("#output")
    expect(page.locator("#output")).to_contain_text("step 3 done", timeout=30000)
    assert page.evaluate("window.__notReloaded") is True  # grown in place, no reload
    later = page.inner_text("#output")
    assert len(later) > len(early) and "step 3 done" not in early
    assert page.inner_text("#job-state") == "running"
    shot(page, "job-running")
    # The jobs table follows the job without a reload.
    page.goto(f"{base}/jobs?q={job.job_id}")
    page.evaluate("window.__notReloaded = true")
    expect(page.locator(f"tr[data-job-id='{job.job_id}']")).to_have_attribute(
        "data-state", "finished", timeout=30000)
    assert page.evaluate("window.__notReloaded") is True
    shot(page, "jobs-live")


def test_a_single_tasks_output_shows_while_the_task_runs(page, share, server):
    """Issue 27: a one-task job printing a line a second for 8 s: its first line is on the
    page at least 4 s before its last (the output reached the share dir as it came)."""
    path, _ = share
    base, _ = server
    cc = RxLocalParallel(num_workers=1, wait=False, share_dir=path)
    job = rx_exec(print_every_second, lines=[8], compute_context=cc)
    page.goto(f"{base}/jobs/{job.job_id}")
    expect(page.locator("#output")).to_contain_text("live line 0", timeout=30000)
    first_seen = time.monotonic()
    expect(page.locator("#output")).to_contain_text("live line 7", timeout=30000)
    assert time.monotonic() - first_seen >= 4.0
    shot(page, "job-live-single-task")


def test_cancel_a_running_job(page, share, server):
    path, _ = share
    base, _ = server
    cc = RxLocalParallel(num_workers=1, wait=False, share_dir=path)
    job = rx_exec(print_steps, n=[0, 1], pause=[60, 60], task_chunk_size=1, compute_context=cc)
    page.goto(f"{base}/jobs/{job.job_id}")
    wait_for(lambda: (page.reload(), page.inner_text("#job-state") == "running")[1], 30, "the job to run")
    shot(page, "job-before-cancel")
    page.click("#cancel-button")  # a page that asks first, and changes nothing
    page.wait_for_selector("#confirm-cancel")
    assert page.inner_text("#cancel-job-id") == job.job_id
    shot(page, "job-cancel-confirm")
    for scheme in ("light", "dark"):  # this page needs a running job: checked here, not in every_page
        page.emulate_media(color_scheme=scheme)
        assert page.evaluate(LOW_CONTRAST_JS)["low"] == []
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1280, "height": 900})
    page.click("#keep-running")
    page.wait_for_selector("#job-state")
    assert page.inner_text("#job-state") == "running"
    page.click("#cancel-button")
    page.click("#confirm-cancel")
    page.wait_for_url(re.compile(r"notice=canceled"))
    assert page.inner_text("#job-state") == "canceled"
    assert "canceled" in page.inner_text(".notice")
    shot(page, "job-canceled")
    # POST-redirect-GET: a reload asks for the job's page again, and posts nothing.
    methods = []
    page.on("request", lambda request: methods.append(request.method))
    page.reload()
    assert methods and set(methods) == {"GET"}
    assert "canceled" in page.inner_text(".notice")


def test_cleanup_preview_then_confirm(page, share, server):
    path, made = share
    base, _ = server
    store = open_store(path)
    chosen = [made["retrieved"][0], made["failed"][0], made["canceled"][0], made["unretrieved"][0]]
    gone = chosen[:3]
    freed = sum(store.usage(i).bytes for i in gone)
    page.goto(f"{base}/jobs?q=factory&per_page=100")
    for job_id in chosen:
        page.check(f"input[name=job_id][value='{job_id}']")
    page.click("#cleanup-selected")
    page.wait_for_url(re.compile(r"/cleanup/plans/"))
    assert page.inner_text("#would-count") == "3"
    assert page.get_attribute("#would-bytes", "data-bytes") == str(freed)
    assert page.inner_text("#kept-count") == "1"
    assert "never retrieved" in page.inner_text("#plan")
    shot(page, "cleanup-preview")
    assert all(store.is_job_dir(i) for i in chosen)  # a preview removes nothing
    page.click("#confirm-button")
    page.wait_for_selector("#done-summary")
    assert page.inner_text("#removed-count") == "3"
    warning = page.inner_text("#kept-warning")
    assert made["unretrieved"][0] in warning and "never retrieved" in warning
    shot(page, "cleanup-done")
    assert [store.is_job_dir(i) for i in chosen] == [False, False, False, True]
    page.goto(f"{base}/jobs?per_page=1000")
    shown = set(job_ids_on(page))
    assert not set(gone) & shown and made["unretrieved"][0] in shown


def test_force_needs_a_confirmation_that_says_what_is_lost(page, share, server):
    path, made = share
    base, _ = server
    job_id = made["unretrieved"][1]
    page.goto(f"{base}/jobs/{job_id}")
    page.click("text=Clean up with force…")
    page.wait_for_selector("#force-warning")
    assert "never retrieved, are deleted" in page.inner_text("#force-warning")
    shot(page, "cleanup-force")
    page.click("#confirm-button")  # the box is not ticked: the browser does not send the form
    assert page.query_selector("#done-summary") is None
    assert open_store(path).is_job_dir(job_id)
    page.check("#confirm-force")
    page.click("#confirm-button")
    page.wait_for_selector("#done-summary")
    assert page.inner_text("#removed-count") == "1"
    assert not open_store(path).is_job_dir(job_id)


def test_disk_use_page(page, server):
    base, _ = server
    page.goto(f"{base}/usage")
    assert page.query_selector_all("#by-state rect.fill")
    assert page.query_selector_all("#by-age rect.fill")
    assert "cleanup --all" in page.inner_text("#policies")
    page.fill("input[name=older_than]", "0s")
    page.fill("input[name=keep_last]", "2")
    page.click("#policy-form button[type=submit]:not([formaction])")
    page.wait_for_url(re.compile(r"older_than=0s"))
    assert "cleanup --older-than 0s --keep-last 2" in page.inner_text("#policies")
    shot(page, "usage")
    page.click("#preview-cleanup")
    page.wait_for_selector("#plan-summary")
    assert "--keep-last 2" in page.inner_text("#plan-summary")
    shot(page, "usage-policy-preview")


def tab_on(browser_context, url, **viewport):
    """A new tab let in with the token at ``url`` = (base, token); the caller closes it."""
    base, token = url
    tab = browser_context.new_page()
    if viewport:
        tab.set_viewport_size(viewport)
    tab.goto(f"{base}/jobs?token={token}")
    return tab


def refreshes(tab) -> int:
    return int(tab.get_attribute("#jobs-table", "data-refreshes"))


def select_text_of(tab, selector: str) -> None:
    """Select the text of the element (as a user's drag would)."""
    tab.eval_on_selector(selector, """el => { const range = document.createRange();
        range.selectNodeContents(el); const s = window.getSelection(); s.removeAllRanges();
        s.addRange(range); }""")


def test_refresh_keeps_selection_and_focus_and_shows_a_new_state(page, share, server):
    """A refresh changes cells in place: the selected id and the focused checkbox stay as they
    were, while the running job's row turns finished."""
    path, _ = share
    base, _ = server
    cc = RxLocalParallel(num_workers=1, wait=False, share_dir=path)
    job = rx_exec(print_steps, n=[0, 1], pause=[3.0, 3.0], task_chunk_size=1, compute_context=cc)
    page.goto(f"{base}/jobs?q={job.job_id}")
    page.evaluate("window.__notReloaded = true")
    row = f"tr[data-job-id='{job.job_id}']"
    expect(page.locator(row)).to_have_attribute("data-state", re.compile("queued|running"), timeout=30000)
    assert page.inner_text("#jobs-total") == "1"
    select_text_of(page, f"{row} td.id a")
    page.focus(f"{row} input[name=job_id]")
    before = refreshes(page)
    expect(page.locator(row)).to_have_attribute("data-state", "finished", timeout=60000)
    wait_for(lambda: refreshes(page) >= before + 2, 30, "two refreshes")
    assert page.evaluate("window.getSelection().toString()") == job.job_id
    assert page.evaluate("document.activeElement.value") == job.job_id
    assert page.evaluate("window.__notReloaded") is True
    shot(page, "jobs-refresh-kept-selection")


@pytest.mark.timeout(300)  # making the 20,000 jobs, once per session, takes 20-60 s
def test_refresh_at_scale_filtered_and_sorted_keeps_selection(browser_context, big_share, big_server):
    """On 20,000 jobs, a view filtered by state and sorted by size refreshes (304s once the
    catalog knows every ended job) without losing the selection or the focus."""
    base, _ = big_server
    tab = tab_on(browser_context, big_server)
    try:
        tab.goto(f"{base}/jobs?state=failed&sort=-size&per_page=50", timeout=120000)
        ids = job_ids_on(tab)
        assert len(ids) == 50 and set(ids) <= set(big_share[1]["failed"])
        assert tab.inner_text("h1 small").startswith(f"{len(big_share[1]['failed'])} jobs")
        select_text_of(tab, f"tr[data-job-id='{ids[3]}'] td.id a")
        tab.focus(f"tr[data-job-id='{ids[5]}'] input[name=job_id]")
        before = refreshes(tab)
        wait_for(lambda: refreshes(tab) >= before + 2, 60, "two refreshes")
        assert tab.evaluate("window.getSelection().toString()") == ids[3]
        assert tab.evaluate("document.activeElement.value") == ids[5]
        assert job_ids_on(tab) == ids
        shot(tab, "jobs-20000-failed-by-size")
    finally:
        tab.close()


# Every visible text against the background it is drawn on (the nearest ancestor's that is
# not transparent, blended down): WCAG 2's contrast ratio, AA's thresholds.
LOW_CONTRAST_JS = """() => {
  function rgba(text) {
    const m = text.match(/rgba?\\(([^)]+)\\)/);
    if (!m) throw new Error("unparsed colour " + text);
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  }
  function over(top, under) {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a)).concat([1]);
  }
  function luminance(c) {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  }
  function background(el) {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255, 1];
    for (const layer of layers.reverse()) bg = over(layer, bg);
    return bg;
  }
  const low = [];
  let checked = 0;
  for (const el of document.querySelectorAll("body *")) {
    if (!Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
    if (["OPTION", "SCRIPT", "STYLE"].includes(el.tagName)) continue;
    const style = getComputedStyle(el);
    if (style.visibility !== "visible" || !el.getClientRects().length) continue;
    const bg = background(el);
    const fg = over(rgba(style.color), bg);
    const [a, b] = [luminance(fg), luminance(bg)];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (parseInt(style.fontWeight, 10) >= 700 && size >= 18.66);
    checked += 1;
    if (ratio < (large ? 3 : 4.5)) {
      low.push(el.tagName + "." + el.className + " '" + el.textContent.trim().slice(0, 30) + "' "
        + ratio.toFixed(2) + ":1 (" + style.color + " on rgb(" + bg.slice(0, 3).map(Math.round) + "))");
    }
  }
  return { checked, low };
}"""


def every_page(share, base: str) -> list[str]:
    """A URL of each kind of page, each state of job among them."""
    _, made = share
    return [f"{base}/jobs?per_page=100", f"{base}/jobs/{made['failed'][2]}?preview=1",
            f"{base}/jobs/{made['unretrieved'][2]}?notice=canceled", f"{base}/jobs/{made['canceled'][2]}",
            f"{base}/jobs/{made['hostile'][0]}", f"{base}/usage",
            f"{base}/cleanup?job_id={made['unretrieved'][2]}&job_id={made['failed'][2]}&force=1",
            f"{base}/cleanup?job_id={made['unretrieved'][2]}", f"{base}/jobs/rxJob_20000101000000000000_dead",
            f"{base}/jobs/{made['unretrieved'][2]}/cancel"]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_meets_wcag_aa_contrast(page, share, server, scheme):
    base, _ = server
    page.emulate_media(color_scheme=scheme)
    for url in every_page(share, base):
        page.goto(url)
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        found = page.evaluate(LOW_CONTRAST_JS)
        assert found["checked"] > 5, url
        assert found["low"] == [], f"{url} in {scheme} mode"
    shot(page, f"contrast-{scheme}")


WIDEST_JS = """() => [...document.querySelectorAll("body *")]
  .filter((el) => el.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
  .slice(0, 8)
  .map((el) => el.tagName + "." + el.className + " " + Math.round(el.getBoundingClientRect().right))"""


@pytest.mark.timeout(300)  # making the 20,000 jobs, once per session, takes 20-60 s
def test_every_page_fits_390_px_without_horizontal_scroll(browser_context, share, server, big_server,
                                                          partly_failed):
    """At 390 px wide no page scrolls sideways; a long id or traceback wraps or scrolls in its own box."""
    tab = tab_on(browser_context, server, width=390, height=844)
    try:
        base, _ = server
        big_base, big_token = big_server
        urls = every_page(share, base) + [f"{base}/jobs/{partly_failed}?preview=1",
                                          f"{big_base}/jobs?token={big_token}",
                                          f"{big_base}/jobs?state=canceled&sort=size"]
        for url in urls:
            tab.goto(url, timeout=120000)
            tab.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            width = tab.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{url} is {width} px wide: {tab.evaluate(WIDEST_JS)}"
            name = re.sub(r"[^a-z0-9]+", "-", url.split("/", 4)[-1].split("token=")[0].lower())[:40]
            shot(tab, f"390-{name}")
        # The traceback of a failed run keeps its lines: it scrolls inside its box.
        tab.goto(f"{base}/jobs/{partly_failed}?preview=1")
        tab.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        pre = tab.locator("#preview pre").first
        assert pre.evaluate("el => getComputedStyle(el).overflowX") == "auto"
        assert pre.evaluate("el => el.getBoundingClientRect().right") <= 390
    finally:
        tab.close()


def test_a_partly_failed_job_says_how_many_runs_failed(page, server, partly_failed):
    """A real job 3 of whose 9 runs raised reads "finished, 3 of 9 runs failed" in the list
    and on its page, not a bare "finished"."""
    base, _ = server
    page.goto(f"{base}/jobs?q={partly_failed}")
    row = page.locator(f"tr[data-job-id='{partly_failed}']")
    expect(row).to_have_attribute("data-state", "finished")
    assert row.locator(".state").inner_text() == "finished, 3 of 9 runs failed"
    page.goto(f"{base}/jobs/{partly_failed}")
    assert page.inner_text("#job-state") == "finished, 3 of 9 runs failed"
    assert page.inner_text("#job-reason") == "finished, 3 of 9 runs failed"
    page.goto(f"{base}/jobs/{partly_failed}?preview=1")
    assert page.locator("#preview tr.failed").count() == 3
    assert "ValueError" in page.inner_text("#preview")
    shot(page, "job-partly-failed")


def test_copy_id_with_one_click_and_download_the_output(browser_context, page, share, server):
    """The copy button puts the id on the clipboard; where the Clipboard API is refused it
    selects the id instead.  The output downloads as a file named after the job."""
    _, made = share
    base, _ = server
    job_id = made["unretrieved"][0]
    browser_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base.split("/", 3)[0]
                                      + "//" + base.split("/", 3)[2])
    try:
        page.goto(f"{base}/jobs/{job_id}")
        page.click("h1 button.copy")
        expect(page.locator("h1 button.copy")).to_have_attribute("data-copied", "yes")
        assert page.evaluate("navigator.clipboard.readText()") == job_id
        page.goto(f"{base}/jobs?q={job_id}")
        page.evaluate("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
        page.click(f"tr[data-job-id='{job_id}'] button.copy")
        expect(page.locator(f"tr[data-job-id='{job_id}'] button.copy")).to_have_attribute(
            "data-copied", "selected")
        assert page.evaluate("window.getSelection().toString()") == job_id
    finally:
        browser_context.clear_permissions()
    page.goto(f"{base}/jobs/{job_id}")
    with page.expect_download() as download_info:
        page.click("#download-output")
    download = download_info.value
    assert download.suggested_filename == f"{job_id}-output.txt"
    assert Path(download.path()).read_text() == page.inner_text("#output")
