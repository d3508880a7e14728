"""rxjobs: run Python functions as distributed jobs and clean up after them safely.

The open successor of the job functions of RevoScaleR / revoscalepy: code
written for revoscalepy's ``rx_exec``, ``rx_get_jobs``, ... runs after changing
only the import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

# Public name -> the module that defines it.  Imported on first use, so that
# `import rxjobs.engines.local` (a job driver starting) does not pay for the
# whole API, and `import rxjobs` stays cheap.
_EXPORTS: dict[str, str] = {
    "CleanupEntry": "cleanup",
    "CleanupOutcome": "cleanup",
    "CleanupReport": "cleanup",
    "EngineNotInstalledError": "errors",
    "Executor": "executor",
    "IncompleteResultsError": "errors",
    "JobCanceledError": "errors",
    "JobFailedError": "errors",
    "JobNotFinishedError": "errors",
    "JobNotFoundError": "errors",
    "JobResults": "api",
    "NotAShareDirError": "errors",
    "RxCleanupWarning": "cleanup",
    "RxComputeContext": "contexts",
    "RxDask": "contexts",
    "RxHadoopMR": "contexts",
    "RxInTeradata": "contexts",
    "RxLocalParallel": "contexts",
    "RxLocalSeq": "contexts",
    "RxRemoteJob": "api",
    "RxRemoteJobStatus": "status",
    "RxRunError": "errors",
    "RxRunWarning": "api",
    "RxSlurm": "contexts",
    "RxSpark": "contexts",
    "RxUnsupportedContextError": "errors",
    "UnsafeShareDirError": "errors",
    "UntrustedShareDirError": "errors",
    "get_job": "api",
    "list_jobs": "api",
    "rx_cancel_job": "api",
    "rx_cleanup_jobs": "api",
    "rx_exec": "api",
    "rx_get_compute_context": "api",
    "rx_get_job_info": "api",
    "rx_get_job_output": "api",
    "rx_get_job_results": "api",
    "rx_get_job_status": "api",
    "rx_get_jobs": "api",
    "rx_set_compute_context": "api",
    "rx_spark_connect": "api",
    "rx_spark_disconnect": "api",
    "rx_wait_for_job": "api",
    "run_rng": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'rxjobs' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from .api import (  # noqa: F401
        JobResults,
        RxRemoteJob,
        RxRunWarning,
        get_job,
        list_jobs,
        rx_cancel_job,
        rx_cleanup_jobs,
        rx_exec,
        rx_get_compute_context,
        rx_get_job_info,
        rx_get_job_output,
        rx_get_job_results,
        rx_get_job_status,
        rx_get_jobs,
        rx_set_compute_context,
        rx_spark_connect,
        rx_spark_disconnect,
        rx_wait_for_job,
    )
    from .cleanup import CleanupEntry, CleanupOutcome, CleanupReport, RxCleanupWarning  # noqa: F401
    from .contexts import (  # noqa: F401
        RxComputeContext,
        RxDask,
        RxHadoopMR,
        RxInTeradata,
        RxLocalParallel,
        RxLocalSeq,
        RxSlurm,
        RxSpark,
    )
    from .errors import (  # noqa: F401
        EngineNotInstalledError,
        IncompleteResultsError,
        JobCanceledError,
        JobFailedError,
        JobNotFinishedError,
        JobNotFoundError,
        NotAShareDirError,
        RxRunError,
        RxUnsupportedContextError,
        UnsafeShareDirError,
        UntrustedShareDirError,
    )
    from .executor import Executor  # noqa: F401
    from .runner import run_rng  # noqa: F401
    from .status import RxRemoteJobStatus  # noqa: F401
