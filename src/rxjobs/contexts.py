"""Compute contexts: plain, picklable, comparable values that say where a job runs.

A context names its engine by a string; the engine module is imported only
when a job is run, probed or canceled (see :mod:`rxjobs.engines`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from .durations import format_duration, to_timedelta
from .errors import EngineNotInstalledError, RxUnsupportedContextError
from .options import StorageOptions, redact_text, storage_options
from .sharedir import default_share_dir, is_process_local, normalize_share_dir


@dataclass(frozen=True)
class RxComputeContext:
    """Base of every compute context.

    Subclasses are frozen dataclasses; their fields are the settings stored in
    ``job.json`` and compared by ``rx_get_jobs(exact_match=True)``.
    """

    engine: ClassVar[str | None] = None

    @property
    def kind(self) -> str:
        return type(self).__name__

    def settings(self) -> dict[str, Any]:
        """Every setting, as stored in ``job.json`` (JSON values; credentials redacted)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, StorageOptions):
                value = value.redacted()
            elif isinstance(value, timedelta):
                value = format_duration(value)
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            elif isinstance(value, str):
                value = redact_text(value)  # a scheduler address with a login, say
            out[f.name] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "description": redact_text(repr(self)), "settings": self.settings()}

    @staticmethod
    def from_dict(record: dict[str, Any]) -> RxComputeContext:
        """Rebuild a context from its ``job.json`` record."""
        kind = record.get("kind")
        cls = _KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f"unknown compute context kind {kind!r} in job record")
        names = {f.name for f in dataclasses.fields(cls)}
        settings = {k: v for k, v in (record.get("settings") or {}).items() if k in names}
        return cls(**settings)

    @property
    def waits(self) -> bool:
        """Whether ``rx_exec`` blocks until the results are in (``wait``, where a context has it)."""
        return bool(getattr(self, "wait", True))

    def engine_address(self) -> str:
        """Where the engine is: a host, a scheduler address or a Spark master."""
        return socket.gethostname()

    def job_share_dir(self) -> str:
        """The context's share dir (normalized at construction), else the default one."""
        return getattr(self, "share_dir", None) or default_share_dir()

    def job_share_dir_options(self) -> dict[str, Any] | None:
        """The fsspec storage options of the share dir (None: the filesystem's defaults)."""
        options = getattr(self, "share_dir_options", None)
        return options.to_dict() if isinstance(options, StorageOptions) else None

    def matches(self, other: RxComputeContext, exact_match: bool = False) -> bool:
        """Whether a job submitted with this context is one of ``other``'s jobs.

        RevoScaleR's matching, with the share dir left out: a job belongs to
        the share dir it is found in, whatever path spelled that directory at
        submit (it may since have been moved, or be reached through a symlink
        or another mount point), so share dirs are never compared here.

        Parameters
        ----------
        other
            The context asked with.
        exact_match
            False: the engine address is the same.  True: also the same kind
            and every other setting, except where the share dir is and the
            storage options that reach it (see :data:`PLACE_SETTINGS`).
        """
        if self.engine_address() != other.engine_address():
            return False
        if not exact_match:
            return True
        return self.kind == other.kind and _placeless(self.settings()) == _placeless(other.settings())


# The settings that say where a share dir is and how to reach it, not how a job runs:
# matching leaves them out (the same directory has many spellings).
PLACE_SETTINGS = frozenset({"share_dir", "share_dir_options"})


def _placeless(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in PLACE_SETTINGS}


@dataclass(frozen=True)
class RxLocalSeq(RxComputeContext):
    """Run every run in the calling process, one after another; always waits, no artifacts."""

    engine: ClassVar[str | None] = None


@dataclass(frozen=True)
class RxLocalParallel(RxComputeContext):
    """Run a job in a pool of processes on this machine.

    Parameters
    ----------
    num_workers
        Worker processes; None means one per CPU.
    wait
        True: ``rx_exec`` blocks and returns the results.  False: it returns an
        :class:`~rxjobs.RxRemoteJob` at once and the job runs in a detached
        driver process that outlives the caller.
    share_dir
        Where the job's artifacts live; default ``$RXJOBS_SHARE_DIR`` or the
        per-user data directory.
    console_output
        Print the runs' console output when results are collected.
    auto_cleanup
        Remove the job's artifacts once its results have been returned.
    share_dir_options
        fsspec storage options of an object-store share dir (``endpoint_url``,
        ``key``, ``secret``, ``profile``...); credentials are passed to the
        job's processes but never written to ``job.json`` (see docs/storage.md).
    expires_after
        Retention: a duration (``"7d"``, a ``timedelta``) after which, once the
        job has ended, cleanup removes it without force, results included.
    """

    num_workers: int | None = None
    wait: bool = True
    share_dir: str | None = None
    console_output: bool = False
    auto_cleanup: bool = True
    share_dir_options: Any = field(default=None, repr=False)
    expires_after: Any = None

    engine: ClassVar[str | None] = "local"

    def __post_init__(self) -> None:
        if self.num_workers is not None and (
            not isinstance(self.num_workers, int) or isinstance(self.num_workers, bool)
            or self.num_workers < 1
        ):
            raise ValueError(f"num_workers must be a positive integer or None, not {self.num_workers!r}")
        share = normalize_share_dir(self.share_dir) if self.share_dir is not None else default_share_dir()
        if is_process_local(share):
            raise ValueError(
                f"RxLocalParallel needs a share_dir that its driver and worker processes can all "
                f"reach (a directory on a local disk or an object store URL), not {share!r}, which only "
                "this process can see"
            )
        object.__setattr__(self, "share_dir", share)
        _normalize_storage_fields(self)

    @property
    def workers(self) -> int:
        return self.num_workers or os.cpu_count() or 1


def _normalize_storage_fields(cc: Any) -> None:
    """Freeze ``share_dir_options`` and ``expires_after`` into hashable, comparable values."""
    object.__setattr__(cc, "share_dir_options", storage_options(cc.share_dir_options))
    expires = cc.expires_after
    if expires is not None:
        object.__setattr__(cc, "expires_after", to_timedelta(expires, "expires_after"))


def _cluster_share_dir(share_dir: str | None, kind: str,
                       reachable: str = "a shared directory or an object store URL") -> str:
    share = normalize_share_dir(share_dir) if share_dir is not None else default_share_dir()
    if is_process_local(share):
        raise ValueError(
            f"{kind} needs a share_dir that every worker can reach ({reachable}), not {share!r}, "
            "which only this process can see"
        )
    return share


def _require(module: str, extra: str, kind: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise EngineNotInstalledError(
            f"{kind} needs the {module} package, which is not installed; "
            f'install it with: pip install "rxjobs[{extra}]"'
        )


def _is_scheduler_address(address: str) -> bool:
    """``scheme://host:port`` with a scheme Dask listens on and a valid port."""
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme in ("tcp", "tls", "ws", "wss", "ucx") and bool(parts.hostname)
            and port is not None and parts.path in ("", "/") and not parts.query)


@dataclass(frozen=True)
class RxDask(RxComputeContext):
    """Run a job on an existing Dask distributed cluster.

    Parameters
    ----------
    address
        The scheduler's address, e.g. ``"tcp://10.0.0.5:8786"`` (``tcp://`` is
        assumed when no scheme is given).
    wait, share_dir, console_output, auto_cleanup, share_dir_options, expires_after
        As for :class:`RxLocalParallel`; ``share_dir`` must be reachable from
        every worker (a shared directory or an object store URL).
    """

    address: str = ""
    wait: bool = True
    share_dir: str | None = None
    console_output: bool = False
    auto_cleanup: bool = True
    share_dir_options: Any = field(default=None, repr=False)
    expires_after: Any = None

    engine: ClassVar[str | None] = "dask"

    def __post_init__(self) -> None:
        _require("distributed", "dask", "RxDask")
        if not isinstance(self.address, str) or not self.address.strip():
            raise ValueError("RxDask needs the scheduler address, e.g. RxDask('tcp://host:8786')")
        address = self.address.strip()
        if "://" not in address:
            address = f"tcp://{address}"
        if not _is_scheduler_address(address):
            raise ValueError(
                f"invalid Dask scheduler address {self.address!r}: give the scheduler's host and "
                "port, e.g. RxDask('tcp://10.0.0.5:8786') (what `dask scheduler` prints)"
            )
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "share_dir", _cluster_share_dir(self.share_dir, "RxDask"))
        _normalize_storage_fields(self)

    def engine_address(self) -> str:
        return self.address


@dataclass(frozen=True)
class RxSpark(RxComputeContext):
    """Run a job on Apache Spark through PySpark.

    Parameters
    ----------
    master
        ``"local[N]"``, ``"spark://host:port"`` or ``"yarn"``.
    wait, share_dir, console_output, auto_cleanup, share_dir_options, expires_after
        As for :class:`RxLocalParallel`; ``share_dir`` must be reachable from
        every executor.
    num_executors, executor_cores, executor_mem, driver_mem
        ``spark.executor.instances``, ``spark.executor.cores``,
        ``spark.executor.memory``, ``spark.driver.memory`` (e.g. ``"4g"``).
    extra_spark_config
        Any other Spark settings, as a dict of strings.
    app_name
        The Spark application name (default: the job id).
    persistent_run
        False: every job is its own Spark application, started and stopped by
        a driver process of its own.  True: jobs run in one persistent Spark
        application on this machine (started by :func:`~rxjobs.rx_spark_connect`
        or by the first job), shared by every job with the same share dir,
        master and Spark settings; see docs/spark.md.
    idle_timeout
        With ``persistent_run``: seconds with no job running after which the
        persistent Spark application stops; 0 or less: it never does.
    """

    master: str = "yarn"
    wait: bool = True
    share_dir: str | None = None
    console_output: bool = False
    auto_cleanup: bool = True
    num_executors: int | None = None
    executor_cores: int | None = None
    executor_mem: str | None = None
    driver_mem: str | None = None
    extra_spark_config: Any = None
    app_name: str | None = None
    share_dir_options: Any = field(default=None, repr=False)
    expires_after: Any = None
    persistent_run: bool = False
    idle_timeout: int = 3600

    engine: ClassVar[str | None] = "spark"

    def __post_init__(self) -> None:
        _require("pyspark", "spark", "RxSpark")
        if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
            raise EngineNotInstalledError(
                "RxSpark needs Java 17 or newer: install a JDK and put `java` on PATH "
                "(or set JAVA_HOME)"
            )
        if not isinstance(self.master, str) or not self.master.strip():
            raise ValueError("RxSpark needs a master: 'local[N]', 'spark://host:port' or 'yarn'")
        object.__setattr__(self, "master", self.master.strip())
        if not isinstance(self.persistent_run, bool):
            raise TypeError(f"persistent_run must be True or False, not {self.persistent_run!r}")
        if isinstance(self.idle_timeout, bool) or not isinstance(self.idle_timeout, int):
            raise TypeError(f"idle_timeout must be a number of seconds (an int), not {self.idle_timeout!r}")
        extra = self.extra_spark_config or ()
        items = extra.items() if isinstance(extra, dict) else extra
        # A sorted tuple of pairs keeps the context hashable and comparable.
        object.__setattr__(self, "extra_spark_config",
                           tuple(sorted((str(k), str(v)) for k, v in items)) or None)
        object.__setattr__(self, "share_dir", _cluster_share_dir(self.share_dir, "RxSpark"))
        _normalize_storage_fields(self)

    def engine_address(self) -> str:
        return self.master


@dataclass(frozen=True)
class RxSlurm(RxComputeContext):
    """Run a job on a Slurm cluster, as one job array (see docs/slurm.md).

    Parameters
    ----------
    partition, time_limit, mem, account, qos
        ``sbatch --partition/--time/--mem/--account/--qos`` of every array
        task (e.g. ``time_limit="1:00:00"``, ``mem="4G"``); None: the cluster's defaults.
    cpus_per_task
        ``sbatch --cpus-per-task`` of every array task.
    max_parallel
        At most this many array tasks run at once (the array's ``%N`` throttle);
        None: as many as Slurm gives.
    extra_sbatch_options
        Any other ``sbatch`` options, e.g. ``["--constraint=skylake"]``.
    wait, console_output, auto_cleanup, expires_after
        As for :class:`RxLocalParallel`.
    share_dir
        A directory on a filesystem that every node of the cluster mounts at
        the same path (NFS, Lustre, GPFS...); Slurm writes its job output files
        there too, so object stores are refused.
    python
        The Python the nodes run; default the submitter's ``sys.executable``
        (which must exist on the nodes, e.g. in a shared virtualenv).
    cluster
        The Slurm cluster's name (``ClusterName``); default the cluster this
        machine's Slurm commands talk to.  ``rx_get_jobs`` matches jobs by it.
    """

    partition: str | None = None
    time_limit: str | None = None
    mem: str | None = None
    cpus_per_task: int = 1
    account: str | None = None
    qos: str | None = None
    max_parallel: int | None = None
    extra_sbatch_options: Any = None
    wait: bool = True
    share_dir: str | None = None
    console_output: bool = False
    auto_cleanup: bool = True
    expires_after: Any = None
    python: str | None = None
    cluster: str | None = None

    engine: ClassVar[str | None] = "slurm"

    def __post_init__(self) -> None:
        from .slurm_client import cluster_name, require_commands

        require_commands("RxSlurm")
        for name in ("cpus_per_task", "max_parallel"):
            value = getattr(self, name)
            if value is None and name == "max_parallel":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        for name in ("partition", "time_limit", "mem", "account", "qos", "python", "cluster"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty string or None, not {value!r}")
        extra = self.extra_sbatch_options
        if isinstance(extra, str):
            extra = extra.split()
        extra = tuple(str(option) for option in extra or ())
        object.__setattr__(self, "extra_sbatch_options", extra or None)
        share = _cluster_share_dir(self.share_dir, "RxSlurm",
                                   "a directory on a filesystem that every node mounts")
        if "://" in share and not share.startswith("file://"):
            raise ValueError(
                f"RxSlurm needs a share_dir on a filesystem that every node mounts (NFS, Lustre, "
                f"GPFS...), not {share!r}: Slurm writes the jobs' output files there"
            )
        object.__setattr__(self, "share_dir", share)
        if self.cluster is None:
            object.__setattr__(self, "cluster", cluster_name())
        if self.expires_after is not None:
            object.__setattr__(self, "expires_after", to_timedelta(self.expires_after, "expires_after"))

    def engine_address(self) -> str:
        return f"slurm:{self.cluster}"


def RxHadoopMR(*args: Any, **kwargs: Any) -> RxComputeContext:  # noqa: N802 - revoscalepy name
    """Not available: Hadoop MapReduce went with Machine Learning Server."""
    raise RxUnsupportedContextError(
        "RxHadoopMR is not available in rxjobs (Hadoop MapReduce was retired with Machine "
        "Learning Server); use RxSpark(master='yarn', ...) to run on the same Hadoop cluster, "
        "or RxDask(address) for a Dask cluster"
    )


def RxInTeradata(*args: Any, **kwargs: Any) -> RxComputeContext:  # noqa: N802 - revoscalepy name
    """Not available: in-database Teradata execution went with Machine Learning Server."""
    raise RxUnsupportedContextError(
        "RxInTeradata is not available in rxjobs; read the data out of Teradata and run the job "
        "with RxSpark(...) or RxDask(address), or locally with RxLocalParallel()"
    )


_KINDS: dict[str, type[RxComputeContext]] = {
    "RxLocalSeq": RxLocalSeq,
    "RxLocalParallel": RxLocalParallel,
    "RxDask": RxDask,
    "RxSpark": RxSpark,
    "RxSlurm": RxSlurm,
}


def register_context(cls: type[RxComputeContext]) -> type[RxComputeContext]:
    """Make a context kind known to :meth:`RxComputeContext.from_dict` (used by engine extras)."""
    _KINDS[cls.__name__] = cls
    return cls
