"""A real single-node Slurm cluster for the tests and the benchmark.

``munged`` with a fresh key, ``slurmctld -D`` and ``slurmd -D -N localhost``
run as real daemons on free loopback ports, with every file they keep (state,
spool, logs, pid files, the munge socket) in one temporary directory and
``SLURM_CONF`` pointing at a generated ``slurm.conf``.  Debian's
``slurm-wlm`` and ``munge`` packages provide them; the daemons run as root
(``SlurmUser=root``), so the cluster needs root.

:func:`slurm_unavailable` says why a cluster cannot be started here (None when
it can); :class:`SlurmCluster` starts and stops one.  Every process the
cluster started, and every job step process it launched (found by the
``SLURM_CONF`` in their environment), is stopped by :meth:`SlurmCluster.stop`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
PACKAGES = "slurm-wlm and munge"
# A requeued job may start again only once its launch credential has expired (slurm.conf(5),
# AuthInfo `cred_expire`: 120 s by default, at least 5): short here, so that a test of
# requeue waits seconds, not two minutes.  Scheduling passes every second (`sched_interval`,
# `bf_interval`; 60 s and 30 s by default) then start it as soon as it may.
CRED_EXPIRE_S = 10


def slurm_unavailable() -> str | None:
    """Why a test cluster cannot be started here, or None if it can."""
    missing = [name for name in (*DAEMONS, *COMMANDS) if _which(name) is None]
    if missing:
        return (f"Slurm tests need the Debian packages {PACKAGES} (missing: {', '.join(missing)}); "
                "`make test` installs them when run as root")
    if os.geteuid() != 0:
        return "Slurm tests start slurmctld/slurmd as SlurmUser=root and need to run as root"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SlurmCluster:
    """munged + slurmctld + slurmd on loopback, everything under ``workdir``.

    Parameters
    ----------
    workdir
        A fresh directory for the daemons' state, spool, logs and socket.
    cpus
        CPUs the node declares (``SlurmdParameters=config_overrides``, so more
        than the machine has is fine: tiny array tasks run side by side).
    min_job_age
        ``MinJobAge``: seconds Slurm remembers an ended job.
    name
        ``ClusterName``.
    """

    def __init__(self, workdir: Path, cpus: int = 8, min_job_age: int = 30,
                 name: str = "rxtest") -> None:
        self.workdir = Path(workdir)
        self.cpus = cpus
        self.min_job_age = min_job_age
        self.name = name
        self.conf = self.workdir / "slurm.conf"
        self.munge_socket = self.workdir / "munge" / "munge.socket"
        self.ctld_port = _free_port()
        self.slurmd_port = _free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self._saved_env: dict[str, str | None] = {}

    # -- set up ---------------------------------------------------------------------------

    def _write_files(self) -> None:
        w = self.workdir
        for sub in ("munge", "state", "spool", "log"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(w / "munge", 0o700)
        key = w / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
            os.chmod(key, 0o400)
        self.conf.write_text(f"""\
ClusterName={self.name}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire={CRED_EXPIRE_S}
StateSaveLocation={w / 'state'}
SlurmdSpoolDir={w / 'spool'}
SlurmctldPidFile={w / 'slurmctld.pid'}
SlurmdPidFile={w / 'slurmd.pid'}
SlurmctldLogFile={w / 'log' / 'slurmctld.log'}
SlurmdLogFile={w / 'log' / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=1,bf_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={w / 'log' / 'jobcomp.txt'}
MinJobAge={self.min_job_age}
MessageTimeout=5
SlurmctldTimeout=10
SlurmdTimeout=30
ReturnToService=2
MaxArraySize=100001
SlurmdParameters=config_overrides
PlugStackConfig={w / 'plugstack.conf'}
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
        (w / "plugstack.conf").write_text("")

    def env(self) -> dict[str, str]:
        """The environment of a process that uses this cluster's commands."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        with open(self.workdir / "log" / f"{name}.out", "ab") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=self.workdir, env=self.env(),
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def _wait(self, name: str, check, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs.get(name)
        while not check():
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not come up within {timeout:.0f} s: "
                                   f"{self.log_tail(name)}")
            time.sleep(0.05)

    def log_tail(self, name: str, lines: int = 20) -> str:
        text = ""
        for path in (self.workdir / "log" / f"{name}.out", self.workdir / "log" / f"{name}.log"):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> SlurmCluster:
        """Start the three daemons and make this process use the cluster (``SLURM_CONF``)."""
        try:
            self._write_files()
            self._start_munged()
            self.start_slurmctld()
            self._start_slurmd()
        except BaseException:
            self.stop()
            raise
        self._saved_env = {"SLURM_CONF": os.environ.get("SLURM_CONF")}
        os.environ["SLURM_CONF"] = str(self.conf)
        return self

    def _start_munged(self) -> None:
        m = self.workdir / "munge"
        self._spawn("munged", [
            _which("munged"), "-F", "-f", f"--socket={self.munge_socket}",
            f"--key-file={m / 'munge.key'}", f"--pid-file={m / 'munged.pid'}",
            f"--log-file={self.workdir / 'log' / 'munged.log'}", f"--seed-file={m / 'munged.seed'}",
        ])
        self._wait("munged", self.munge_socket.exists)

    def start_slurmctld(self, clear_state: bool = False) -> None:
        """Start (or restart) the controller; ``clear_state`` makes it forget every job.

        A controller without saved state knows the node only when ``slurmd``
        registers again: it is restarted too, rather than waited for.
        """
        cmd = [_which("slurmctld"), "-D", "-f", str(self.conf)]
        if clear_state:
            cmd.append("-c")
        self._spawn("slurmctld", cmd)
        self._wait("slurmctld", self._controller_up)
        if clear_state and "slurmd" in self.procs:
            _stop(self.procs.pop("slurmd"))
            self._start_slurmd()

    def _start_slurmd(self) -> None:
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)])
        self._wait("slurmd", self._node_ready)

    def stop_slurmctld(self) -> None:
        """Stop the controller (jobs keep running on the node)."""
        _stop(self.procs.pop("slurmctld", None))

    def _run(self, *cmd: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env(),
                              timeout=timeout)

    def _controller_up(self) -> bool:
        try:
            return self._run("scontrol", "ping").returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _node_ready(self) -> bool:
        try:
            done = self._run("sinfo", "-h", "-N", "-o", "%T")
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0 and done.stdout.strip() in ("idle", "mixed", "allocated")

    # -- tear down ------------------------------------------------------------------------

    def job_processes(self) -> list[psutil.Process]:
        """Every live process started under this cluster (slurmstepd and the jobs' processes).

        They are found by ``SLURM_CONF`` in their environment, read from
        ``/proc/<pid>/environ`` as bytes: slurmstepd writes its title over the
        start of that memory, and psutil's parsed ``environ()`` is then empty.
        """
        needle = f"SLURM_CONF={self.conf}".encode()
        found = []
        for proc in psutil.process_iter(["pid", "status"]):
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            try:
                with open(f"/proc/{proc.pid}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        found.append(proc)
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """Stop the daemons (SIGTERM in reverse order, SIGKILL after a grace) and every job process."""
        for name in reversed(DAEMONS):
            _stop(self.procs.pop(name, None))
        leftovers = self.job_processes()
        for proc in leftovers:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        _wait_ended(leftovers, timeout=10)
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}


def _wait_ended(procs: list[psutil.Process], timeout: float) -> None:
    """Wait until ``procs`` are gone or zombies (orphans whose reaping is init's business);
    ``kill -0`` alone would count a zombie as alive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for proc in procs:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                continue
        if not alive:
            return
        procs = alive
        time.sleep(0.05)


def _stop(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM a daemon's process group, SIGKILL it after ``grace``, and reap it."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
