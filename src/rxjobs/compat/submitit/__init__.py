"""submitit's documented API over rxjobs jobs: ``import rxjobs.compat.submitit as submitit``.

Written from submitit's documentation (docs/executor.md says what differs
and why).  ``folder`` is the share dir; jobs are ordinary rxjobs jobs that
``rxjobs list``, cleanup, retention and the web page see.
"""

from __future__ import annotations

from . import helpers
from .environment import JobEnvironment
from .executors import AutoExecutor, DebugExecutor, Executor, LocalExecutor, SlurmExecutor
from .job import DebugJob, DelayedSubmission, FailedJobError, Job, UncompletedJobError
from .parameters import ParameterError

__all__ = ["AutoExecutor", "DebugExecutor", "DebugJob", "DelayedSubmission", "Executor", "FailedJobError",
           "Job", "JobEnvironment", "LocalExecutor", "ParameterError", "SlurmExecutor",
           "UncompletedJobError", "helpers"]
