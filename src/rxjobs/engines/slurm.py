"""The Slurm engine: a job is one Slurm job array plus a final job that records its end.

``submit`` makes two ``sbatch`` calls (the job's directory is already written):

* a **job array** named after the rxjobs job id, one array task per rxjobs
  task (chunk), ``max_parallel`` as its ``%N`` throttle.  Each array task runs
  ``<python> -m rxjobs.engines.slurm_task task <job_id> --share-dir <dir>`` with the
  submitter's Python and ``sys.path``; it runs :func:`rxjobs.runner.run_task`
  for ``$SLURM_ARRAY_TASK_ID``.  Slurm's own stdout/stderr of a task go to
  ``tasks/<k>.slurm.log`` inside the job's directory, so cleanup removes
  every trace.  The task whose result completes the job records it FINISHED
  (no waiting for the final job) and cancels the final job, still pending
  behind it, so that it is never launched; with ``continue_on_failure=False``
  the first run that raises records the job FAILED and cancels the other tasks.
* a **final job** ``<job_id>-end`` with ``--dependency=afterany:<array>``: it
  runs whatever way the tasks ended and, unless the end is already recorded,
  records FINISHED, or FAILED with Slurm's reason for each task that left no
  result (TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, cancelled from outside...).  So a
  non-waiting job reaches FINISHED or FAILED with no rxjobs process alive.

The handle in ``engine.json`` is ``{"cluster", "array", "final", "n_tasks",
"job_id", "share_dir"}``.  ``probe`` asks ``squeue`` about both Slurm jobs:
pending → QUEUED, a task started → RUNNING; when Slurm says the final job
ended without recording the end (cancelled, failed, timed out), the probe
records FAILED with Slurm's reason; when Slurm no longer knows the jobs (after
``MinJobAge``; ``sacct`` is asked when accounting is enabled) the job is lost
(FAILED); when ``slurmctld`` does not answer, UNREACHABLE (UNDETERMINED).
``cancel`` runs ``scancel`` on both.

Only the Slurm client commands are needed (``sbatch``, ``squeue``,
``scontrol``, ``scancel``, ``sinfo``; ``sacct`` when accounting is on): no
Python package.  The share dir must be a filesystem every node mounts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from typing import Any

from ..errors import EngineRefusedError
from ..slurm_client import (
    SlurmCommandError,
    SlurmUnreachableError,
    config_key,
    run_slurm,
)
from ..status import Probe, Record
from .base import Handle, SubmittedJob
from .slurm_states import (
    OPTIONS_ENV,
    TASK_LOG_SUFFIX,
    SlurmState,
    accounting_enabled,
    failure_reason,
    final_job_name,
    invalid_job_id,
    normalize_state,
    probe_from_states,
    query_array,
)

_SUBMIT_TIMEOUT_S = 60.0
# How long cancel waits for the cancelled tasks to be gone from the node.
_CANCEL_WAIT_S = 20.0
# Automatic chunking: at most this many array tasks run at once when neither
# max_parallel nor a smaller partition says otherwise.
_MAX_AUTO_SLOTS = 128
# The final job only reads a few files and asks slurmctld once.
_FINAL_TIME_LIMIT = "10"

_slots_cache: dict[tuple[str, str | None], tuple[float, int]] = {}


def partition_cpus(partition: str | None) -> int:
    """CPUs of ``partition`` (the default partition for None), cached for a minute."""
    key = (config_key(), partition)
    cached = _slots_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < 60:
        return cached[1]
    args = ["sinfo", "-h", "-o", "%P %C"] + (["-p", partition] if partition else [])
    total = 0
    for line in run_slurm(args).stdout.splitlines():
        name, _, cpus = line.strip().partition(" ")
        if partition is None and not name.endswith("*"):
            continue  # not the default partition
        try:
            total += int(cpus.split("/")[-1])
        except ValueError:
            continue
    _slots_cache[key] = (time.monotonic(), max(total, 1))
    return max(total, 1)


# -- the engine -----------------------------------------------------------------------------


class SlurmEngine:
    """Run, probe and cancel jobs as Slurm job arrays."""

    def parallelism(self, context: Any) -> int:
        """Array tasks Slurm may run at once, divided by four.

        Starting a Slurm task costs a scheduling cycle and an interpreter start,
        so automatic chunks aim at about one task per slot, not the four per
        worker :func:`rxjobs.arguments.choose_chunk_size` gives other engines.
        """
        slots = context.max_parallel
        if slots is None:
            slots = min(_MAX_AUTO_SLOTS,
                        max(1, partition_cpus(context.partition) // max(1, context.cpus_per_task)))
        return max(1, -(-slots // 4))

    def submit(self, job: SubmittedJob) -> Handle:
        from ..store import open_store

        cc: Any = job.context  # an RxSlurm: its settings are read by name
        store = open_store(job.share_dir, job.share_dir_options)
        if store.os_path(store.root) is None:
            raise ValueError(f"RxSlurm needs a share dir on a filesystem every node mounts, not {store.url}")
        paths = store.paths(job.job_id)
        env = _job_environment(job.share_dir_options)
        python = cc.python or sys.executable
        # Tasks run in the submitter's working directory, as sbatch's own default and
        # as the local engine's workers do (relative paths mean the same thing).
        common = ["sbatch", "--parsable", "--export=ALL", f"--chdir={os.getcwd()}"]
        for option, value in (("--partition", cc.partition), ("--account", cc.account),
                              ("--qos", cc.qos)):
            if value:
                common.append(f"{option}={value}")
        throttle = f"%{cc.max_parallel}" if cc.max_parallel else ""
        task_cmd = [python, "-m", "rxjobs.engines.slurm_task", "task", job.job_id, "--share-dir", store.root]
        array_args = [*common, f"--job-name={job.job_id}", f"--array=0-{job.n_tasks - 1}{throttle}",
                      f"--cpus-per-task={cc.cpus_per_task}", "--open-mode=append",
                      f"--output={_pattern_path(paths.tasks)}/%a{TASK_LOG_SUFFIX}"]
        if cc.time_limit:
            array_args.append(f"--time={cc.time_limit}")
        if cc.mem:
            array_args.append(f"--mem={cc.mem}")
        array_args.extend(cc.extra_sbatch_options or ())
        array_id = _job_id_of(run_slurm(array_args, timeout=_SUBMIT_TIMEOUT_S,
                                        input=_script(task_cmd), env=env).stdout)
        try:
            final_cmd = [python, "-m", "rxjobs.engines.slurm_task", "finish", job.job_id,
                         "--share-dir", store.root, "--array", array_id]
            final_args = [*common, f"--job-name={final_job_name(job.job_id)}",
                          f"--dependency=afterany:{array_id}", "--kill-on-invalid-dep=no",
                          "--output=/dev/null", "--ntasks=1", "--cpus-per-task=1",
                          f"--time={_FINAL_TIME_LIMIT}"]
            final_id = _job_id_of(run_slurm(final_args, timeout=_SUBMIT_TIMEOUT_S,
                                            input=_final_script(paths.dir, final_cmd), env=env).stdout)
        except BaseException:
            run_slurm(["scancel", array_id], check=False)
            raise
        return {"cluster": cc.cluster, "array": array_id, "final": final_id, "n_tasks": job.n_tasks,
                "job_id": job.job_id, "share_dir": store.url}

    def probe(self, handle: Handle) -> Probe:
        try:
            array_id, final_id = _ids(handle)
            array, final = _squeue_states(array_id, final_id, str(handle["job_id"]))
        except SlurmUnreachableError:
            return Probe.UNREACHABLE
        except (SlurmCommandError, KeyError, TypeError, ValueError):
            return Probe.UNREACHABLE
        view = probe_from_states(array, final)
        if view == "queued":
            return Probe.ALIVE
        if view == "started":
            return Probe.STARTED
        # The final job ended, or Slurm forgot the job: if nothing recorded the end
        # (the status.json the core read before probing said nothing), say why here.
        _record_slurm_end(handle, final, unknown=view == "unknown")
        return Probe.GONE

    def cancel(self, handle: Handle) -> bool:
        try:
            array_id, final_id = _ids(handle)
            job_id = str(handle["job_id"])
            array, final = _squeue_states(array_id, final_id, job_id)
        except (SlurmUnreachableError, SlurmCommandError, KeyError, TypeError, ValueError):
            return False
        ids = ([array_id] if any(not s.ended for s in array) else []) + (
            [final_id] if final is not None and not final.ended else [])
        if not ids:
            return False
        try:
            done = run_slurm(["scancel", *ids], check=False)
        except SlurmUnreachableError:
            return False
        refusal = scancel_refusal(done.returncode, done.stderr or "")
        if refusal is not None:
            raise EngineRefusedError(
                f"Slurm refused to cancel job {job_id} (Slurm job {', '.join(ids)}): {refusal}; it is "
                "not stopped. Are the Slurm ids in its engine.json yours?")
        # Wait (bounded) for the tasks to leave the node, so that none writes into a
        # job directory that cleanup is about to remove.
        deadline = time.monotonic() + _CANCEL_WAIT_S
        while time.monotonic() < deadline:
            try:
                array, final = _squeue_states(array_id, final_id, job_id)
            except (SlurmUnreachableError, SlurmCommandError):
                break
            if all(s.ended for s in array) and (final is None or final.ended):
                break
            time.sleep(0.1)
        return True

    def sleeper(self, handle: Handle) -> StatusFileSleeper | None:
        """A sleep that returns once the job's end is recorded (see engines/base.py).

        Parameters
        ----------
        handle
            The job's handle from ``engine.json``.

        Returns
        -------
        StatusFileSleeper or None
            None when the handle does not name a local job directory.
        """
        try:
            from ..store import open_store

            store = open_store(handle["share_dir"])
            paths = store.paths(handle["job_id"])
        except (KeyError, TypeError, ValueError):
            return None
        watched = [store.os_path(paths.status_json), store.os_path(paths.canceled)]
        if None in watched:
            return None
        return StatusFileSleeper([path for path in watched if path is not None])


class StatusFileSleeper:
    """``sleep(seconds)`` that returns early once one of ``paths`` exists.

    The end of a Slurm job is recorded in ``status.json`` by whichever task or
    final job records it; cheap ``stat`` calls every few tens of milliseconds
    see it at once, on this host or through a shared filesystem.
    """

    _STEP_S = 0.02

    def __init__(self, paths: list[str]) -> None:
        self._paths = paths
        self._woken = False

    def __call__(self, seconds: float) -> None:
        if self._woken:
            time.sleep(seconds)
            return
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            if any(os.path.lexists(p) for p in self._paths):
                self._woken = True  # later sleeps are plain ones (the waiter re-checks)
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(self._STEP_S, left))


ENGINE = SlurmEngine()


_DENIED_RE = re.compile(r"denied|not owner|invalid user|not authorized|permission", re.IGNORECASE)


def scancel_refusal(returncode: int, stderr: str) -> str | None:
    """What ``scancel`` said when it refused to cancel (pure); None when it did not refuse.

    ``scancel`` of a job that already ended also fails ("Invalid job id",
    "already completing"): that is no refusal, the job is simply gone.
    """
    if returncode == 0:
        return None
    lines = [line.strip() for line in stderr.splitlines() if _DENIED_RE.search(line)]
    return "; ".join(lines)[:500] if lines else None


def _ids(handle: Handle) -> tuple[str, str]:
    array_id, final_id = str(handle["array"]), str(handle["final"])
    if not (array_id.isdigit() and final_id.isdigit()):
        raise ValueError("Slurm job ids are numbers")
    return array_id, final_id


def _squeue_states(array_id: str, final_id: str,
                   job_id: str) -> tuple[list[SlurmState], SlurmState | None]:
    """The states of the array's tasks and of the final job, as ``squeue`` remembers them.

    Only Slurm jobs named after ``job_id`` count: a controller that lost its
    state numbers jobs from 1 again, and another job's state must not be taken
    for this one's.
    """
    done = run_slurm(["squeue", "-h", "-t", "all", "-j", f"{array_id},{final_id}",
                      "-o", "%F|%i|%T|%r|%j"], check=False)
    if done.returncode != 0:
        if invalid_job_id(done.stderr):
            return [], None
        raise SlurmCommandError(f"`squeue` failed: {done.stderr.strip()}")
    array: list[SlurmState] = []
    final = None
    for line in done.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 5:
            continue
        state = SlurmState(normalize_state(fields[2]), fields[3])
        if fields[1] == final_id and fields[4] == final_job_name(job_id):
            final = state
        elif fields[0] == array_id and fields[4] == job_id:
            array.append(state)
    return array, final


def _record_slurm_end(handle: Handle, final: SlurmState | None, unknown: bool) -> None:
    """From a probe: record FAILED with Slurm's reason when the final job could not.

    Only in the job directory whose record holds this very handle (a
    handle is untrusted input and must not make us write anywhere else), and
    never over a recorded end.  Best effort: a probe must answer anyway.
    """
    from .. import records
    from ..runner import count_failed_runs
    from ..store import open_store

    try:
        store = open_store(handle["share_dir"])
        job_id = handle["job_id"]
        if store.os_path(store.root) is None or records.read_engine_record(store, job_id).handle != handle:
            return
        if records.read_status_record(store, job_id).is_final:
            return
        if store.being_removed(job_id, or_canceled=True):
            return
        if unknown:
            if not accounting_enabled():
                return  # nothing to say but "lost", which the core says
            states = query_array(str(handle["array"]), job_id)
            if not states:
                return
        else:
            states = query_array(str(handle["array"]), job_id)
        n_tasks = records.read_job_record(store, job_id).n_tasks
        reason = failure_reason(store, job_id, n_tasks, states)
        if reason is None:  # every task wrote its result: the end just went unrecorded
            records.write_status(store, job_id, Record.FINISHED,
                                 failed_runs=count_failed_runs(store, job_id, n_tasks))
            return
        if final is not None and final.state == "COMPLETED":
            reason += (f"; the final job ran but could not record the end: check that every node "
                       f"mounts the share dir {store.url}")
        elif final is not None and final.ended:
            reason += f"; the final job ended {final.state} before recording it"
        records.write_status(store, job_id, Record.FAILED, reason)
    except Exception:
        return


# -- submitting -----------------------------------------------------------------------------


def _job_environment(options: dict[str, Any] | None) -> dict[str, str]:
    """The environment ``sbatch`` passes on: the caller's, with its ``sys.path`` as
    ``PYTHONPATH`` (functions pickled by reference must import on the nodes) and the
    share dir's storage options, if any, in ``$RXJOBS_SHARE_DIR_OPTIONS``."""
    env = dict(os.environ)
    path = [p or os.getcwd() for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    env.pop(OPTIONS_ENV, None)
    if options:
        env[OPTIONS_ENV] = json.dumps(options)
    # The job's umask (sbatch keeps one already set): the Slurm logs slurmstepd
    # creates in the job directory are 0600, like every other file there.
    env["SLURM_UMASK"] = "0077"
    return env


def _pattern_path(path: str) -> str:
    """A path for ``sbatch --output``, whose ``%`` would start a replacement symbol."""
    return path.replace("%", "%%")


def _script(cmd: list[str]) -> str:
    return ("#!/bin/sh\n# rxjobs: one task of a job (see rxjobs.engines.slurm_task)\nexec "
            + shlex.join(cmd) + "\n")


def _final_script(job_dir: str, cmd: list[str]) -> str:
    """The final job's script: a job collected or already recorded costs no interpreter start."""
    d = shlex.quote(job_dir)
    return (
        "#!/bin/sh\n"
        "# rxjobs: records how the job ended (see rxjobs.engines.slurm_task)\n"
        f"[ -d {d} ] || exit 0\n"
        f"[ -e {d}/canceled ] && exit 0\n"
        f"grep -q '\"state\": \"f' {d}/status.json 2>/dev/null && exit 0\n"  # finished or failed
        f"exec {shlex.join(cmd)} >>{d}/driver.log 2>&1\n"
    )


def _job_id_of(out: str) -> str:
    """The job id ``sbatch --parsable`` printed (``id`` or ``id;cluster``)."""
    job_id = out.strip().splitlines()[-1].split(";", 1)[0] if out.strip() else ""
    if not job_id.isdigit():
        raise SlurmCommandError(f"sbatch did not print a job id: {out.strip()!r}")
    return job_id


if __name__ == "__main__":
    # Array tasks and final jobs queued by an rxjobs from before slurm_task.py name this module.
    import runpy

    runpy.run_module("rxjobs.engines.slurm_task", run_name="__main__", alter_sys=True)
