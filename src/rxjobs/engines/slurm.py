"""The Slurm engine: a job is one Slurm job array plus a final job that records its end.

``submit`` makes two ``sbatch`` calls (the job's directory is already written):

* a **job array** named after the rxjobs job id, one array task per rxjobs
  task (chunk), ``max_parallel`` as its ``%N`` throttle.  Each array task runs
  ``<python> -m rxjobs.engines.slurm task <job_id> --share-dir <dir>`` with the
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
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..slurm_client import (
    SlurmCommandError,
    SlurmUnreachableError,
    cluster_config,
    config_key,
    run_slurm,
)
from ..status import Probe, Record
from .base import Handle, SubmittedJob

_SUBMIT_TIMEOUT_S = 60.0
# How long cancel waits for the cancelled tasks to be gone from the node.
_CANCEL_WAIT_S = 20.0
# Automatic chunking: at most this many array tasks run at once when neither
# max_parallel nor a smaller partition says otherwise.
_MAX_AUTO_SLOTS = 128
# The final job only reads a few files and asks slurmctld once.
_FINAL_TIME_LIMIT = "10"
TASK_LOG_SUFFIX = ".slurm.log"
OPTIONS_ENV = "RXJOBS_SHARE_DIR_OPTIONS"

def _invalid_job_id(stderr: str) -> bool:
    return "invalid job id" in stderr.lower()

# Slurm job states (squeue %T, scontrol JobState, sacct State).
_WAITING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
_ACTIVE = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED",
                     "SIGNALING", "RESIZING", "STAGE_OUT", "SPECIAL_EXIT"})
_ENDED = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                    "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "REVOKED"})


def accounting_enabled() -> bool:
    """Whether ``sacct`` can answer for jobs slurmctld has forgotten."""
    storage = cluster_config().get("AccountingStorageType", "accounting_storage/none")
    return storage not in ("", "accounting_storage/none") and shutil.which("sacct") is not None


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


# -- states and reasons (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class SlurmState:
    """What Slurm says about one job or array task."""

    state: str
    reason: str = ""
    exit_code: str = ""

    @property
    def ended(self) -> bool:
        return self.state in _ENDED

    @property
    def waiting(self) -> bool:
        return self.state in _WAITING


def normalize_state(text: str) -> str:
    """``"CANCELLED by 0"`` → ``"CANCELLED"``; ``"OOM"`` → ``"OUT_OF_MEMORY"``."""
    word = text.strip().split(" ", 1)[0].rstrip("+").upper()
    return {"OOM": "OUT_OF_MEMORY", "CA": "CANCELLED", "TO": "TIMEOUT", "NF": "NODE_FAIL",
            "PR": "PREEMPTED", "F": "FAILED", "CD": "COMPLETED", "PD": "PENDING",
            "R": "RUNNING", "CG": "COMPLETING"}.get(word, word)


#: Why a task ended, by the Slurm state it ended in; ``{task}`` and ``{exit}`` (its exit
#: code or signal, in words) are filled in.
TASK_END_TEXT = {
    "TIMEOUT": "task {task} hit its Slurm time limit (TIMEOUT); give RxSlurm(time_limit=...) more",
    "OUT_OF_MEMORY": "task {task} ran out of memory (OUT_OF_MEMORY); give RxSlurm(mem=...) more",
    "NODE_FAIL": "task {task} was lost with its node (NODE_FAIL)",
    "BOOT_FAIL": "task {task} could not start: its node failed to boot (BOOT_FAIL)",
    "CANCELLED": "task {task} was cancelled on Slurm (scancel from outside rxjobs, or an admin)",
    "PREEMPTED": "task {task} was preempted and not requeued (PREEMPTED)",
    "DEADLINE": "task {task} missed its Slurm deadline (DEADLINE)",
    "FAILED": "task {task} failed on Slurm ({exit}); see tasks/{task}" + TASK_LOG_SUFFIX,
    "COMPLETED": "task {task} ended ({exit}) without writing its result",
}


def describe_task_end(task: int, end: SlurmState | None) -> str:
    """Why task ``task`` left no result, in words for the user, from Slurm's record of it."""
    if end is None:
        return (f"task {task} left no result and Slurm no longer knows how it ended "
                "(cancelled while pending, or forgotten after MinJobAge)")
    text = TASK_END_TEXT.get(end.state)
    if text is not None:
        return text.format(task=task, exit=_exit_text(end.exit_code))
    return f"task {task} left no result (Slurm state {end.state}{', ' + end.reason if end.reason else ''})"


def _exit_text(code: str) -> str:
    """``"1:0"`` → ``"exit code 1"``, ``"0:9"`` → ``"killed by signal 9"``."""
    status, _, signal_number = code.partition(":")
    if signal_number and signal_number != "0":
        return f"killed by signal {signal_number}"
    if status and status != "0":
        return f"exit code {status}"
    return "exit code 0"


def describe_missing(missing: list[int], states: dict[int, SlurmState], n_tasks: int,
                     log_tails: dict[int, str] | None = None) -> str:
    """The FAILED reason of a job whose tasks ``missing`` left no result."""
    parts = []
    for task in missing[:5]:
        text = describe_task_end(task, states.get(task))
        tail = (log_tails or {}).get(task)
        if tail:
            text += f" (its Slurm log ends: {tail})"
        parts.append(text)
    more = f"; and {len(missing) - 5} more" if len(missing) > 5 else ""
    return f"no result for {len(missing)} of {n_tasks} task(s): " + "; ".join(parts) + more


def _expand_indexes(text: str) -> list[int]:
    """``"0-3,7"`` / ``"[0-3,7]%2"`` → ``[0, 1, 2, 3, 7]``."""
    text = text.strip().strip("[]").split("%", 1)[0].rstrip("]")
    found: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            found.extend(range(int(first), int(last or first) + 1))
    return found


_FIELD_PATTERN = r"(?:^|\s)(JobId|JobName|ArrayJobId|ArrayTaskId|JobState|Reason|ExitCode)=(\S*)"


def parse_scontrol_jobs(text: str) -> list[dict[str, str]]:
    """The first ``JobId``/``ArrayJobId``/``ArrayTaskId``/``JobState``/``Reason``/``ExitCode``
    of each line of ``scontrol show job -o`` (later fields, such as paths, may hold spaces)."""
    records = []
    for line in text.splitlines():
        fields: dict[str, str] = {}
        for name, value in re.findall(_FIELD_PATTERN, line):
            fields.setdefault(name, value)
        if "JobId" in fields:
            records.append(fields)
    return records


def array_task_states(records: Iterable[dict[str, str]], name: str | None = None) -> dict[int, SlurmState]:
    """Task index → state, from :func:`parse_scontrol_jobs` records of one array
    (only those of jobs named ``name``, if given)."""
    states = {}
    for rec in records:
        if name is not None and rec.get("JobName") != name:
            continue
        state = SlurmState(normalize_state(rec.get("JobState", "")), rec.get("Reason", ""),
                           rec.get("ExitCode", ""))
        for task in _expand_indexes(rec.get("ArrayTaskId", "")):
            states[task] = state
    return states


def parse_sacct(text: str, array_id: str, name: str | None = None) -> dict[int, SlurmState]:
    """Task index → state from ``sacct -n -P -X --format=JobID,State,ExitCode,Reason,JobName``
    (only jobs named ``name``, if given)."""
    states = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 3:
            continue
        job, _, index = fields[0].partition("_")
        if job != array_id or (name is not None and len(fields) > 4 and fields[4] != name):
            continue
        state = SlurmState(normalize_state(fields[1]), fields[3] if len(fields) > 3 else "",
                           fields[2])
        for task in _expand_indexes(index):
            states[task] = state
    return states


def query_array(array_id: str, job_id: str) -> dict[int, SlurmState]:
    """What Slurm remembers of each task of the array of ``job_id`` (``scontrol``, else ``sacct``).

    Raises SlurmUnreachableError when slurmctld does not answer.
    """
    done = run_slurm(["scontrol", "show", "job", "-o", array_id], check=False)
    if done.returncode == 0:
        return array_task_states(parse_scontrol_jobs(done.stdout), job_id)
    if not _invalid_job_id(done.stderr):
        raise SlurmCommandError(f"`scontrol show job {array_id}` failed: {done.stderr.strip()}")
    if accounting_enabled():
        done = run_slurm(["sacct", "-n", "-P", "-X", "-j", array_id,
                          "--format=JobID,State,ExitCode,Reason,JobName"], check=False)
        if done.returncode == 0:
            return parse_sacct(done.stdout, array_id, job_id)
    return {}


def probe_from_states(array: list[SlurmState], final: SlurmState | None) -> str:
    """The engine's view from ``squeue``'s states of the array tasks and the final job.

    Returns ``"queued"``, ``"started"``, ``"recorded"`` (the final job completed,
    so it recorded the end), ``"ended"`` (Slurm ended the final job before it
    could record anything) or ``"unknown"`` (Slurm knows neither).
    """
    if final is None and not array:
        return "unknown"
    if final is not None and final.state == "COMPLETED":
        return "recorded"
    if final is not None and final.ended:
        return "ended"
    if final is not None and final.waiting and "DependencyNeverSatisfied" in final.reason:
        return "ended"
    started = any(not s.waiting for s in array) or (final is not None and not final.waiting)
    if final is None and array and all(s.ended for s in array):
        return "ended"  # the final job vanished (purged early, or never accepted)
    return "started" if started else "queued"


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
        if not store.is_local:
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
        task_cmd = [python, "-m", "rxjobs.engines.slurm", "task", job.job_id, "--share-dir", store.root]
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
            final_cmd = [python, "-m", "rxjobs.engines.slurm", "finish", job.job_id,
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
            run_slurm(["scancel", *ids], check=False)
        except SlurmUnreachableError:
            return False
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
        if not store.is_local:
            return None
        return StatusFileSleeper([paths.status_json, paths.canceled])


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


def final_job_name(job_id: str) -> str:
    """The Slurm job name of a job's final job (its array is named ``job_id``)."""
    return f"{job_id}-end"


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
        if _invalid_job_id(done.stderr):
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
    from ..store import open_store

    try:
        store = open_store(handle["share_dir"])
        job_id = handle["job_id"]
        if not store.is_local or records.read_engine_record(store, job_id).handle != handle:
            return
        if records.read_status_record(store, job_id).is_final:
            return
        entries = store.job_entries(job_id)
        if entries is None or "canceled" in entries or "deleting" in entries:
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
        reason = _failure_reason(store, job_id, n_tasks, states)
        if reason is None:  # every task wrote its result: the end just went unrecorded
            records.write_status(store, job_id, Record.FINISHED)
            return
        if final is not None and final.state == "COMPLETED":
            reason += (f"; the final job ran but could not record the end: check that every node "
                       f"mounts the share dir {store.url}")
        elif final is not None and final.ended:
            reason += f"; the final job ended {final.state} before recording it"
        records.write_status(store, job_id, Record.FAILED, reason)
    except Exception:
        return


def _failure_reason(store: Any, job_id: str, n_tasks: int,
                    states: dict[int, SlurmState]) -> str | None:
    """None when every task left its result, else why some did not (from Slurm's states)."""
    from ..store import RESULT_SUFFIX, JobPaths

    paths = store.paths(job_id)
    done = set(JobPaths.task_indexes(store.listdir(paths.tasks), RESULT_SUFFIX, n_tasks))
    missing = [k for k in range(n_tasks) if k not in done]
    if not missing:
        return None
    tails = {k: _log_tail(f"{paths.tasks}/{k}{TASK_LOG_SUFFIX}") for k in missing[:5]}
    return describe_missing(missing, states, n_tasks, {k: t for k, t in tails.items() if t})


def _log_tail(path: str, limit: int = 4096) -> str:
    """The last non-empty line of a task's Slurm log (bounded read; '' if none)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - limit), os.SEEK_SET)
        data = os.read(fd, limit).decode(errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)
    lines = [line.strip() for line in data.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


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
    return "#!/bin/sh\n# rxjobs: one task of a job (see rxjobs.engines.slurm)\nexec " + shlex.join(cmd) + "\n"


def _final_script(job_dir: str, cmd: list[str]) -> str:
    """The final job's script: a job collected or already recorded costs no interpreter start."""
    d = shlex.quote(job_dir)
    return (
        "#!/bin/sh\n"
        "# rxjobs: records how the job ended (see rxjobs.engines.slurm)\n"
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


# -- what runs on the nodes -------------------------------------------------------------------


def run_array_task(share_dir: str, job_id: str, task: int) -> int:
    """One array task: run rxjobs task ``task``, then record the end if it completes the job."""
    from .. import records
    from ..runner import run_task
    from ..store import RESULT_SUFFIX, JobPaths, open_store

    options = _options_from_env()
    store = open_store(share_dir, options)
    if records.read_status_record(store, job_id).is_final:
        return 0  # the job already failed (a first failure with continue_on_failure=False)
    summary = run_task(store.url, job_id, task, capture="fd", options=options)
    job = records.read_job_record(store, job_id)
    if not job.options.get("continue_on_failure", True):
        if summary.first_error:
            if records.write_status(store, job_id, Record.FAILED, summary.first_error):
                _cancel_other_tasks(task, job.n_tasks)
                _cancel_final_job(job_id)
        return 0  # else the final job records the end: only it knows no task failed
    paths = store.paths(job_id)
    names = store.listdir(paths.tasks)
    if len(JobPaths.task_indexes(names, RESULT_SUFFIX, job.n_tasks)) == job.n_tasks:
        entries = store.job_entries(job_id)
        if entries is not None and "canceled" not in entries and "deleting" not in entries:
            if records.write_status(store, job_id, Record.FINISHED):
                _cancel_final_job(job_id)
    return 0


def _cancel_final_job(job_id: str) -> None:
    """The end is recorded: the final job, still pending behind this task, has nothing to do.

    Cancelling it spares the cluster a job launch per rxjobs job (it shows as
    CANCELLED in Slurm's records).  Only while it is pending: a final job that
    already runs is left to see the record and exit.  Best effort.
    """
    try:
        run_slurm(["scancel", "--quiet", "--state=PENDING", f"--user={os.getuid()}",
                   f"--name={final_job_name(job_id)}"], check=False)
    except Exception:  # unreachable, or no scancel on this node: the final job runs and exits
        pass


def _cancel_other_tasks(task: int, n_tasks: int) -> None:
    """Fail fast: cancel the array's other tasks (best effort; those that start skip anyway)."""
    array_id = os.environ.get("SLURM_ARRAY_JOB_ID", "")
    others = [k for k in range(n_tasks) if k != task]
    if not array_id.isdigit() or not others:
        return
    ranges = []
    start = prev = others[0]
    for k in [*others[1:], None]:
        if k is not None and k == prev + 1:
            prev = k
            continue
        ranges.append(f"{start}-{prev}" if prev > start else str(start))
        if k is not None:
            start = prev = k
    try:
        run_slurm(["scancel", f"{array_id}_[{','.join(ranges)}]"], check=False)
    except Exception:  # unreachable, or no scancel here: they start, see FAILED and skip
        pass


def finish_job(share_dir: str, job_id: str, array_id: str) -> int:
    """The final job: record FINISHED, or FAILED with Slurm's reasons for missing results."""
    from .. import records
    from ..store import open_store

    store = open_store(share_dir, _options_from_env())
    entries = store.job_entries(job_id)
    if entries is None or "canceled" in entries or "deleting" in entries:
        return 0
    if records.read_status_record(store, job_id).is_final:
        return 0
    n_tasks = records.read_job_record(store, job_id).n_tasks
    reason = _failure_reason(store, job_id, n_tasks, {})
    if reason is not None:  # ask Slurm why only when something is missing
        try:
            states = query_array(array_id, job_id)
        except (SlurmUnreachableError, SlurmCommandError) as exc:
            print(f"rxjobs: could not ask Slurm how the tasks ended: {exc}", file=sys.stderr)
            states = {}
        reason = _failure_reason(store, job_id, n_tasks, states)
    if reason is None:
        records.write_status(store, job_id, Record.FINISHED)
        return 0
    print(f"rxjobs: job {job_id} failed: {reason}", file=sys.stderr)
    records.write_status(store, job_id, Record.FAILED, reason)
    return 0


def _options_from_env() -> dict[str, Any] | None:
    text = os.environ.get(OPTIONS_ENV)
    return json.loads(text) if text else None


_USAGE = """usage: python -m rxjobs.engines.slurm task JOB_ID --share-dir DIR [--task K]
       python -m rxjobs.engines.slurm finish JOB_ID --share-dir DIR --array ARRAY_ID

rxjobs on Slurm: run one array task of a job (K: default $SLURM_ARRAY_TASK_ID), or
record how a job ended (its final job).  Started by the batch scripts RxSlurm submits."""


def parse_args(argv: list[str]) -> dict[str, str]:
    """``[what, job_id, --option value...]`` as a dict (no argparse: it costs every task's start).

    Raises
    ------
    SystemExit
        With the usage, for anything else.
    """
    options = {"task": ("--share-dir",), "finish": ("--share-dir", "--array")}
    if len(argv) < 2 or argv[0] not in options or argv[1].startswith("-"):
        raise SystemExit(_USAGE)
    parsed = {"what": argv[0], "job_id": argv[1]}
    allowed = set(options[argv[0]]) | ({"--task"} if argv[0] == "task" else set())
    rest = argv[2:]
    if len(rest) % 2:
        raise SystemExit(_USAGE)
    for name, value in zip(rest[::2], rest[1::2], strict=True):
        if name not in allowed:
            raise SystemExit(f"unknown option {name}\n{_USAGE}")
        parsed[name[2:]] = value
    if any(name[2:] not in parsed for name in options[argv[0]]):
        raise SystemExit(_USAGE)
    return parsed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args["what"] == "task":
        index = int(args.get("task") or os.environ["SLURM_ARRAY_TASK_ID"])
        return run_array_task(args["share-dir"], args["job_id"], index)
    return finish_job(args["share-dir"], args["job_id"], args["array"])


if __name__ == "__main__":
    sys.exit(main())
