"""rxjobs: run Python functions as distributed jobs and clean up after them safely.

The open successor of the job functions of RevoScaleR / revoscalepy: code
written for revoscalepy's ``rx_exec``, ``rx_get_jobs``, ... runs after changing
only the import.
"""

from .api import (
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
    rx_wait_for_job,
)
from .cleanup import CleanupEntry, CleanupReport, RxCleanupWarning
from .contexts import (
    RxComputeContext,
    RxDask,
    RxHadoopMR,
    RxInTeradata,
    RxLocalParallel,
    RxLocalSeq,
    RxSpark,
    RxUnsupportedContextError,
)
from .errors import (
    EngineNotInstalledError,
    IncompleteResultsError,
    JobCanceledError,
    JobFailedError,
    JobNotFinishedError,
    JobNotFoundError,
    RxRunError,
    UntrustedShareDirError,
)
from .status import RxRemoteJobStatus

__version__ = "0.1.0"

__all__ = [
    "CleanupEntry",
    "CleanupReport",
    "EngineNotInstalledError",
    "IncompleteResultsError",
    "JobCanceledError",
    "JobFailedError",
    "JobNotFinishedError",
    "JobNotFoundError",
    "JobResults",
    "RxCleanupWarning",
    "RxComputeContext",
    "RxDask",
    "RxHadoopMR",
    "RxInTeradata",
    "RxLocalParallel",
    "RxLocalSeq",
    "RxRemoteJob",
    "RxRemoteJobStatus",
    "RxRunError",
    "RxRunWarning",
    "RxSpark",
    "RxUnsupportedContextError",
    "UntrustedShareDirError",
    "get_job",
    "list_jobs",
    "rx_cancel_job",
    "rx_cleanup_jobs",
    "rx_exec",
    "rx_get_compute_context",
    "rx_get_job_info",
    "rx_get_job_output",
    "rx_get_job_results",
    "rx_get_job_status",
    "rx_get_jobs",
    "rx_set_compute_context",
    "rx_wait_for_job",
]
