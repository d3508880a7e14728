"""A forked helper's one way out (rxjobs.store.forking): its exit code says how its body ended,
and it never runs its parent's code after the fork."""

from __future__ import annotations

import os

import pytest

from rxjobs.store.forking import fork_is_safe, run_child


def _boom() -> None:
    raise RuntimeError("boom")


def _exit_7() -> None:
    raise SystemExit(7)


def _interrupted() -> None:
    raise KeyboardInterrupt


@pytest.mark.timeout(30)
@pytest.mark.parametrize("body, code", [
    (lambda: None, 0),
    (_boom, 1),
    (_exit_7, 1),  # even SystemExit: the child leaves by os._exit, never by unwinding
    (_interrupted, 1),
])
def test_a_child_exits_by_how_its_body_ended_and_never_runs_the_parents_code(tmp_path, body, code):
    marker = tmp_path / "parent-code-ran"
    pid = os.fork()
    if pid == 0:
        try:
            run_child(body)
        finally:  # the parent's code after the fork: must never run in the child
            marker.write_text("ran")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == code
    assert not marker.exists()


@pytest.mark.timeout(30)
def test_forking_is_safe_only_in_a_single_threaded_process():
    import threading

    assert fork_is_safe() is (threading.active_count() == 1)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert fork_is_safe() is False
    finally:
        stop.set()
        thread.join()
