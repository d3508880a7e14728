"""Notebooks: HTML displays of jobs and reports, one progress display updated in place, nothing
outside a notebook.

A real IPython kernel (``jupyter_client``, started once for the module from a
kernelspec that runs this interpreter) executes the calls a user would make;
the tests read the kernel's iopub messages, MIME bundles included.  The
displays' HTML is also rendered in headless Debian chromium (Playwright) and
saved as ``tests/artifacts/notebook_displays.png`` to look at.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from rxjobs.displays import (
    JobView,
    OutcomeView,
    UsageView,
    cleanup_html,
    format_bytes,
    job_html,
    jobs_html,
    progress_html,
    progress_text,
    usage_html,
)
from rxjobs.progress import Progress, in_kernel, job_progress

HOSTILE = "<script>alert('pwned')</script>"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"

if os.environ.get("CI"):  # in CI a missing kernel or browser is a failure, never a skip
    import ipykernel  # noqa: F401
    import jupyter_client  # noqa: F401
    import playwright.sync_api  # noqa: F401

pytestmark = pytest.mark.timeout(240)


# -- the pure HTML -------------------------------------------------------------------------


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                     (5 * 1024**3, "5.0 GiB"), (3 * 1024**5, "3072.0 TiB")])
def test_sizes_read_as_people_read_them(n, text):
    assert format_bytes(n) == text


def test_every_text_from_a_share_dir_is_escaped():
    job = JobView(HOSTILE, HOSTILE, None, HOSTILE, 1, 2, 3, 4, reason=HOSTILE)
    outcome = OutcomeView(HOSTILE, "finished", "kept", HOSTILE, 1, 2)
    usage = UsageView(HOSTILE, HOSTILE, 1, 2, HOSTILE)
    for html in (job_html(job, HOSTILE), jobs_html([job], HOSTILE), cleanup_html([outcome]),
                 usage_html(HOSTILE, [usage], [usage]), progress_html(HOSTILE, 1, 2, HOSTILE)):
        assert "<script>" not in html and "&lt;script&gt;" in html


def test_state_badges_and_progress_follow_the_web_page():
    job = JobView("rxJob_1", "running", datetime(2026, 12, 4, tzinfo=timezone.utc), "fit", 3, 12, 5, 2048,
                  reason="")
    html = job_html(job)
    assert 'class="state state-running"' in html and "3/12 tasks" in html and "2.0 KiB" in html
    assert 'style="width:25.0%"' in html
    assert 'class="state state-missing">weird' in job_html(JobView("j", "weird"))  # unknown: grey


def test_a_cleanup_report_says_what_it_freed_and_why_jobs_were_kept():
    html = cleanup_html([OutcomeView("a", "finished", "removed", "results retrieved", 3, 3072),
                         OutcomeView("b", "finished", "kept", "results not retrieved: use force", 2, 10)])
    assert "1 removed, 1 kept; 3 files, 3.0 KiB freed" in html
    assert '<span class="kept">kept</span>' in html and "results not retrieved: use force" in html


def test_the_disk_use_report_sums_by_state_and_by_reason_kept():
    jobs = [UsageView("a", "finished", 2, 1024, ""), UsageView("b", "finished", 1, 2048, "not retrieved"),
            UsageView("c", "running", 1, 1024, "running")]
    html = usage_html("/share", jobs, jobs[:1])
    assert "3 jobs, 4 files, 4.0 KiB; a cleanup without force frees 1.0 KiB" in html
    assert '<td class="kept">not retrieved</td><td class="num">2.0 KiB' in html


def test_progress_has_a_text_twin_for_front_ends_without_html():
    assert progress_text("job x", 2, 5, "running") == "job x: running, 2/5 tasks"
    assert progress_text("job x", 0, None, "queued") == "job x: queued, 0 tasks"


def test_outside_a_kernel_progress_is_inert():
    assert not in_kernel()
    with job_progress("job x", total=3) as bar:
        bar.update(1, state="running")
        bar.update(3, state="finished")
    assert isinstance(bar, Progress) and not bar.shown and bar.updates == 0


def test_a_script_that_waits_never_imports_ipython_nor_prints(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from rxjobs import RxLocalParallel, rx_exec, rx_wait_for_job
        def absval(x):
            return abs(x)
        cc = RxLocalParallel(share_dir={str(tmp_path)!r}, wait=False)
        job = rx_exec(absval, x=[-1, -2], compute_context=cc)
        rx_wait_for_job(job)
        print(rx_exec(absval, x=[-3], compute_context=RxLocalParallel(share_dir={str(tmp_path)!r})))
        assert "IPython" not in sys.modules, "IPython was imported"
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[3]\n"


# -- a real kernel ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernel of this interpreter, from a kernelspec of our own (no system-wide one is used)."""
    pytest.importorskip("ipykernel", reason='notebooks need: pip install "rxjobs[notebook]"')
    manager_mod = pytest.importorskip("jupyter_client.manager")
    from jupyter_client.kernelspec import KernelSpecManager

    specs = tmp_path_factory.mktemp("kernels")
    (specs / "rxjobs-test").mkdir()
    (specs / "rxjobs-test" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "rxjobs test", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(specs)])
    km = manager_mod.KernelManager(kernel_name="rxjobs-test", kernel_spec_manager=ksm)
    km.start_kernel()
    try:
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=120)
            run(kc, "def absval(x):\n    return abs(x)\n")  # what the tests run, defined in the notebook
            yield kc
        finally:
            kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)


def run(kc, code: str, timeout: float = 180) -> list[dict]:
    """Execute ``code``; the iopub messages of that execution, until the kernel is idle again."""
    msg_id = kc.execute(code)
    messages = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            raise AssertionError("\n".join(msg["content"]["traceback"]))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages
        messages.append(msg)


def of_type(messages: list[dict], kind: str) -> list[dict]:
    return [m for m in messages if m["msg_type"] == kind]


def test_waiting_in_a_kernel_shows_one_display_updated_in_place(kernel, tmp_path):
    share, gate = str(tmp_path / "share"), str(tmp_path / "gate")
    run(kernel, textwrap.dedent(f"""
        import os, threading, time
        from rxjobs import RxLocalParallel, rx_exec, rx_wait_for_job
        def step(i, gate):
            while not os.path.exists(gate):
                time.sleep(0.05)
            return i * i
        cc = RxLocalParallel(share_dir={share!r}, wait=False, num_workers=2)
        job = rx_exec(step, i=list(range(4)), gate={gate!r}, compute_context=cc, task_chunk_size=1)
    """))
    waited = run(kernel, f"threading.Timer(1.0, lambda: open({gate!r}, 'w').close()).start()\n"
                         "state = rx_wait_for_job(job)\nprint(state.value)")
    shown = of_type(waited, "display_data")
    assert len(shown) == 1, [m["msg_type"] for m in waited]
    display_id = shown[0]["content"]["transient"]["display_id"]
    assert set(shown[0]["content"]["data"]) >= {"text/html", "text/plain"}
    updates = of_type(waited, "update_display_data")
    assert updates and {u["content"]["transient"]["display_id"] for u in updates} == {display_id}
    last = updates[-1]["content"]["data"]
    assert 'class="state state-finished"' in last["text/html"] and "4/4 tasks" in last["text/html"]
    assert last["text/plain"].endswith("finished, 4/4 tasks")
    assert "finished" in "".join(m["content"].get("text", "") for m in of_type(waited, "stream"))
    # no flood: one display, and no line printed per poll
    assert len(of_type(waited, "stream")) <= 2


def test_a_waiting_rx_exec_in_a_kernel_shows_one_display_too(kernel, tmp_path):
    share = str(tmp_path / "share")
    code = "from rxjobs import RxLocalParallel, rx_exec\n" + \
        f"rx_exec(absval, x=[-1, -2, -3], compute_context=RxLocalParallel(share_dir={share!r}))"
    out = run(kernel, code)
    assert len(of_type(out, "display_data")) == 1
    result = of_type(out, "execute_result")[0]["content"]["data"]["text/plain"]
    assert result == "[1, 2, 3]"


def test_executor_map_in_a_kernel_shows_one_display_counting_its_tasks(kernel, tmp_path):
    share = str(tmp_path / "share")
    code = ("from rxjobs import Executor, RxLocalParallel\n"
            f"with Executor(RxLocalParallel(share_dir={share!r}, num_workers=2)) as ex:\n"
            "    values = list(ex.map(absval, [-1, -2, -3, -4], chunksize=1))\n"
            "print(values)")
    out = run(kernel, code)
    shown = of_type(out, "display_data")
    assert len(shown) == 1, [m["msg_type"] for m in out]
    display_id = shown[0]["content"]["transient"]["display_id"]
    updates = of_type(out, "update_display_data")
    assert updates and {u["content"]["transient"]["display_id"] for u in updates} == {display_id}
    assert updates[-1]["content"]["data"]["text/plain"].endswith("finished, 4/4 tasks")
    assert "[1, 2, 3, 4]" in "".join(m["content"].get("text", "") for m in of_type(out, "stream"))


def test_jobs_lists_and_reports_render_as_html_in_a_kernel(kernel, tmp_path):
    share = str(tmp_path / "share")
    run(kernel, textwrap.dedent(f"""
        from rxjobs import RxLocalParallel, rx_exec, rx_get_jobs, rx_cleanup_jobs, rx_wait_for_job
        from rxjobs.usage import disk_usage
        from rxjobs.store import open_store
        cc2 = RxLocalParallel(share_dir={share!r}, wait=False)
        kept = rx_exec(absval, x=[-1, -2], compute_context=cc2)
        done = rx_exec(absval, x=[-5], compute_context=cc2)
        rx_wait_for_job(kept, progress=False); rx_wait_for_job(done, progress=False)
        done.result(auto_cleanup=False)
    """))

    def html_of(expr: str) -> str:
        data = of_type(run(kernel, expr), "execute_result")[0]["content"]["data"]
        assert "text/plain" in data
        return data["text/html"]

    one = html_of("kept")
    assert "state state-finished" in one and "2/2 tasks" in one and "absval" in one
    listed = html_of("rx_get_jobs(cc2, verbose=False)")
    assert "2 jobs" in listed and listed.count("<tr>") == 3
    usage = html_of(f"disk_usage(open_store({share!r}))")
    assert "2 jobs" in usage and "kept, by reason" in usage
    report = html_of("rx_cleanup_jobs([kept, done], verbose=False)")
    assert "1 removed, 1 kept" in report and '<span class="kept">kept</span>' in report
    rx = html_of("rx_cleanup_jobs([kept], force=True, verbose=False)")
    assert "1 removed, 0 kept" in rx


# -- what it looks like -----------------------------------------------------------------------


def test_the_displays_render_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    when = datetime(2026, 12, 4, 16, 0, tzinfo=timezone.utc)
    views = [JobView("rxJob_20261204160000000000_a1b2", "finished", when, "_fit_and_score", 8, 8, 21, 48_000),
             JobView("rxJob_20261204160100000000_c3d4", "running", when, "run_batch", 3, 8, 9, 12_000),
             JobView("rxJob_20261204160200000000_e5f6", "failed", when, "train", 1, 4, 5, 2_000,
                     reason="driver lost (killed by signal 9)")]
    usage = [UsageView(v.job_id, v.state, v.files, v.bytes, "" if v.state == "finished" else "not ended")
             for v in views]
    body = "<br>".join([
        jobs_html(views, "/data/share"),
        progress_html("job rxJob_20261204160100000000_c3d4", 3, 8, "running"),
        cleanup_html([OutcomeView(views[0].job_id, "finished", "removed", "results retrieved", 21, 48_000),
                      OutcomeView(views[1].job_id, "running", "kept", "job is running", 9, 12_000)]),
        usage_html("/data/share", usage, usage[:2]),
    ])
    page_file = tmp_path / "displays.html"
    page_file.write_text(f"<!doctype html><meta charset=utf-8><body style='background:#fff'>{body}</body>")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as manager:
        browser = manager.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            tab = browser.new_page(viewport={"width": 1100, "height": 900})
            tab.goto(page_file.as_uri())
            badge = tab.locator(".state-finished").first
            assert badge.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(30, 138, 62)"
            assert tab.locator(".state-failed").first.evaluate(
                "e => getComputedStyle(e).backgroundColor") == "rgb(198, 40, 40)"
            width = tab.locator(".bar > span.state-running").first.evaluate("e => e.offsetWidth")
            assert 0 < width < tab.locator(".bar").first.evaluate("e => e.offsetWidth")
            tab.screenshot(path=str(ARTIFACTS / "notebook_displays.png"), full_page=True)
        finally:
            browser.close()


def test_interrupting_a_search_in_the_kernel_cancels_its_jobs(kernel, tmp_path):
    """The notebook's stop button (a kernel interrupt) during a joblib call on the rxjobs backend."""
    pytest.importorskip("joblib")
    from rxjobs import RxLocalParallel, RxRemoteJobStatus, rx_get_jobs

    from conftest import wait_until

    share, gate = str(tmp_path / "share"), str(tmp_path / "gate")
    cc = RxLocalParallel(share_dir=share)
    msg_id = kernel.execute(textwrap.dedent(f"""
        import joblib, os, time
        from rxjobs import RxLocalParallel
        from rxjobs.joblib import parallel_config
        def wait_gate(gate):
            while not os.path.exists(gate):
                time.sleep(0.05)
            return 1
        with parallel_config(RxLocalParallel(share_dir={share!r}), n_jobs=2):
            joblib.Parallel()(joblib.delayed(wait_gate)({gate!r}) for _ in range(4))
    """))
    try:
        wait_until(lambda: any(job.status() is RxRemoteJobStatus.RUNNING
                               for job in rx_get_jobs(cc, verbose=False)), timeout=120,
                   what="the search's job to run")
        kernel.parent.interrupt_kernel()
        errors = []
        while True:
            msg = kernel.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "error":
                errors.append(msg["content"]["ename"])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert errors == ["KeyboardInterrupt"]
        listed = rx_get_jobs(cc, verbose=False)
        assert listed
        # The cancel is asked for before KeyboardInterrupt reaches the cell; its record may land a
        # moment later on a loaded machine.
        wait_until(lambda: {job.status() for job in listed} == {RxRemoteJobStatus.CANCELED},
                   timeout=60, what="the search's jobs to be canceled")
    finally:
        Path(gate).touch()  # never leave a worker waiting
