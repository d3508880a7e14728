"""submitit's ``JobEnvironment``: who am I, from inside a running job (run side, no I/O but os.environ).

On Slurm the values come from the variables Slurm sets for the task; on the
local engine a job is one task, rank 0, on this host, or, in a multi-task job,
one of the processes :mod:`.ranks` started, told its rank by
``RXJOBS_GLOBAL_RANK``, ``RXJOBS_LOCAL_RANK`` and ``RXJOBS_NUM_TASKS``.
"""

from __future__ import annotations

import os
import socket

# What the local engine's multi-task runs (:mod:`.ranks`) tell each rank's process.
RANK_ENV = "RXJOBS_GLOBAL_RANK"
LOCAL_RANK_ENV = "RXJOBS_LOCAL_RANK"
NUM_TASKS_ENV = "RXJOBS_NUM_TASKS"


class JobEnvironment:
    """The running job's id, the task's ranks and the number of tasks and nodes."""

    def __init__(self) -> None:
        env = os.environ
        self.cluster = "slurm" if "SLURM_JOB_ID" in env else "local"
        array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
        if array_job and array_task:
            self.job_id = f"{array_job}_{array_task}"
        else:
            self.job_id = env.get("SLURM_JOB_ID", str(os.getpid()))
        self.raw_job_id = env.get("SLURM_JOB_ID", self.job_id)
        self.array_job_id = array_job
        self.array_task_id = array_task
        self.global_rank = int(env.get(RANK_ENV) or env.get("SLURM_PROCID") or 0)
        self.local_rank = int(env.get(LOCAL_RANK_ENV) or env.get("SLURM_LOCALID") or 0)
        self.node = int(env.get("SLURM_NODEID", "0"))
        self.num_tasks = int(env.get(NUM_TASKS_ENV) or env.get("SLURM_NTASKS") or 1)
        self.num_nodes = int(env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", "1")))
        self.hostname = socket.gethostname()
        self.hostnames = [self.hostname]

    def __repr__(self) -> str:
        return (f"JobEnvironment(job_id={self.job_id}, hostname={self.hostname}, "
                f"local_rank={self.local_rank}({self.num_tasks}), node={self.node}({self.num_nodes}), "
                f"global_rank={self.global_rank}({self.num_tasks}))")
