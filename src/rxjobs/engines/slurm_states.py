"""Slurm's states of a job's array tasks and final job: read, asked for, and told to the user.

What the engine (:mod:`rxjobs.engines.slurm`) and the array task
(:mod:`rxjobs.engines.slurm_task`) both need, below both: the parsing of what
``squeue``, ``scontrol`` and ``sacct`` print into :class:`SlurmState` (pure,
tested by tables), :func:`query_array` that asks Slurm, and the words a
failed job's record gets (:func:`describe_missing`, :func:`failure_reason`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..slurm_client import SlurmCommandError, cluster_config, run_slurm

TASK_LOG_SUFFIX = ".slurm.log"
# The share dir's storage options reach the tasks in this variable (as drivers.OPTIONS_ENV:
# not imported from there, whose imports every task start would pay).
OPTIONS_ENV = "RXJOBS_SHARE_DIR_OPTIONS"


def invalid_job_id(stderr: str) -> bool:
    """Whether a Slurm command failed because it no longer knows the job."""
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


def final_job_name(job_id: str) -> str:
    """The Slurm job name of a job's final job (its array is named ``job_id``)."""
    return f"{job_id}-end"


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
    if not invalid_job_id(done.stderr):
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


# -- why tasks left no result ----------------------------------------------------------------


def failure_reason(store: Any, job_id: str, n_tasks: int,
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
