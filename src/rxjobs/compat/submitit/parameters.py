"""submitit's parameter names, checked and mapped onto rxjobs compute-context settings (pure).

submitit has generic parameters (``timeout_min``, ``mem_gb``, ...), native
parameters of each executor (``partition`` of the Slurm executor), and, on
``AutoExecutor``, native parameters prefixed by the executor's name
(``slurm_partition``); a prefixed generic one (``slurm_timeout_min``)
overrides the generic one on that executor only, and a parameter prefixed
for another executor is ignored.  These functions decide which name is
valid where and what it becomes; they do no I/O and are tested by tables.
"""

from __future__ import annotations

from typing import Any

CLUSTERS = ("slurm", "local", "debug")

GENERIC = frozenset({"name", "timeout_min", "mem_gb", "nodes", "tasks_per_node", "cpus_per_task",
                     "gpus_per_node", "stderr_to_stdout"})

# Native parameters of each executor.  A parameter is here if rxjobs maps it or
# accepts it with no effect (docs/executor.md says which); any other name is an error.
NATIVE: dict[str, frozenset[str]] = {
    "slurm": frozenset({"partition", "time", "mem", "cpus_per_task", "gpus_per_node", "nodes",
                        "ntasks_per_node", "array_parallelism", "additional_parameters", "account",
                        "qos", "constraint", "comment", "exclude", "nodelist", "gres", "wckey",
                        "mem_per_cpu", "mem_per_gpu", "cpus_per_gpu", "gpus_per_task", "exclusive",
                        "job_name", "signal_delay_s", "max_num_timeout", "stderr_to_stdout",
                        "use_srun"}),
    "local": frozenset({"timeout_min", "gpus_per_node", "tasks_per_node", "nodes", "cpus_per_task",
                        "mem_gb", "signal_delay_s", "visible_gpus", "stderr_to_stdout",
                        "max_num_timeout", "name"}),
    "debug": frozenset({"timeout_min", "gpus_per_node", "tasks_per_node", "nodes", "cpus_per_task",
                        "mem_gb", "stderr_to_stdout", "name", "visible_gpus"}),
}

# A generic name as the Slurm executor spells it natively.
_SLURM_SPELLING = {"timeout_min": "time", "mem_gb": "mem", "tasks_per_node": "ntasks_per_node",
                   "name": "job_name"}

# Slurm native parameters that become an sbatch option of the same name.
_SBATCH_OPTIONS = ("constraint", "comment", "exclude", "nodelist", "gres", "wckey", "mem_per_cpu",
                   "mem_per_gpu", "cpus_per_gpu", "gpus_per_task", "gpus_per_node")


class ParameterError(ValueError):
    """A parameter submitit does not have (or rxjobs cannot honour), named in the message."""


def _unknown(names: list[str], where: str, valid: frozenset[str]) -> ParameterError:
    listed = ", ".join(sorted(valid))
    return ParameterError(f"unknown parameter(s) {', '.join(sorted(names))} for {where}; "
                          f"the valid ones are: {listed}")


def check_auto(cluster: str, given: dict[str, Any]) -> None:
    """Check the names ``AutoExecutor.update_parameters`` got (ParameterError naming the bad ones)."""
    bad = []
    for key in given:
        if key in GENERIC:
            continue
        prefix, _, rest = key.partition("_")
        if prefix in CLUSTERS and rest and (rest in NATIVE[prefix] or rest in GENERIC):
            continue
        bad.append(key)
    if bad:
        valid = GENERIC | {f"{c}_{n}" for c in CLUSTERS for n in NATIVE[c]}
        raise _unknown(bad, f"AutoExecutor (cluster {cluster!r})", valid)


def check_native(cluster: str, given: dict[str, Any]) -> None:
    """Check the names a cluster-specific executor's ``update_parameters`` got."""
    bad = [key for key in given if key not in NATIVE[cluster]]
    if bad:
        raise _unknown(bad, f"the {cluster} executor", NATIVE[cluster])


def native_of_auto(cluster: str, params: dict[str, Any]) -> dict[str, Any]:
    """The native parameters of ``cluster`` that an AutoExecutor's parameters amount to.

    Generic ones are spelled as the cluster spells them; ones prefixed for
    this cluster override; ones prefixed for another cluster are dropped.
    """
    spell = _SLURM_SPELLING if cluster == "slurm" else {}
    native: dict[str, Any] = {}
    for key, value in params.items():
        if key in GENERIC:
            native.setdefault(spell.get(key, key), value)
    for key, value in params.items():
        prefix, _, rest = key.partition("_")
        if key not in GENERIC and prefix == cluster:
            native[spell.get(rest, rest)] = value
    return native


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"{name} must be a positive integer, not {value!r}")
    return value


_TASKS_KEY = {"slurm": "ntasks_per_node", "local": "tasks_per_node", "debug": "tasks_per_node"}


def _layout(cluster: str, native: dict[str, Any]) -> tuple[int, int]:
    key = _TASKS_KEY[cluster]
    return _positive_int("nodes", native.get("nodes", 1)), _positive_int(key, native.get(key, 1))


def num_tasks(cluster: str, native: dict[str, Any]) -> int:
    """How many tasks (ranks) each submitted call runs as: ``nodes`` × tasks per node.

    Raises
    ------
    ParameterError
        A count that is not a positive integer.
    """
    nodes, tasks = _layout(cluster, native)
    return nodes * tasks


def _option(name: str, value: Any) -> str:
    flag = "--" + name.replace("_", "-")
    return flag if value is True else f"{flag}={value}"


def slurm_settings(native: dict[str, Any]) -> dict[str, Any]:
    """``RxSlurm`` keyword arguments for the Slurm executor's native parameters.

    ``time`` is in minutes; ``mem`` a Slurm size (``"4GB"``), or a number of GB (``mem_gb``);
    sbatch options named like a parameter become ``--name=value``; and
    ``additional_parameters`` (a dict) adds any other ``--key=value``.
    """
    nodes, tasks = _layout("slurm", native)
    settings: dict[str, Any] = {}
    extra: list[str] = []
    if nodes * tasks > 1:  # a multi-task job: its ranks are one srun step in the allocation
        extra += [f"--nodes={nodes}", f"--ntasks-per-node={tasks}"]
    for key in ("partition", "account", "qos"):
        if native.get(key) is not None:
            settings[key] = str(native[key])
    if native.get("time") is not None:
        settings["time_limit"] = str(_positive_int("timeout_min", native["time"]))
    if native.get("mem") is not None:
        mem = native["mem"]
        number = isinstance(mem, (int, float)) and not isinstance(mem, bool)
        settings["mem"] = f"{round(mem * 1024)}M" if number else str(mem)  # a number is in GB
    if native.get("cpus_per_task") is not None:
        settings["cpus_per_task"] = _positive_int("cpus_per_task", native["cpus_per_task"])
    if native.get("array_parallelism") is not None:
        settings["max_parallel"] = _positive_int("array_parallelism", native["array_parallelism"])
    for key in _SBATCH_OPTIONS:
        if native.get(key) is not None:
            extra.append(_option(key, native[key]))
    if native.get("exclusive"):
        extra.append(_option("exclusive", True if native["exclusive"] is True else native["exclusive"]))
    additional = native.get("additional_parameters") or {}
    if not isinstance(additional, dict):
        raise ParameterError(f"additional_parameters must be a dict, not {type(additional).__name__}")
    extra.extend(_option(str(key), value) for key, value in additional.items())
    if extra:
        settings["extra_sbatch_options"] = extra
    return settings


def local_settings(native: dict[str, Any]) -> dict[str, Any]:
    """``RxLocalParallel`` keyword arguments for the local executor's native parameters.

    Only the number of tasks matters on one machine (``nodes`` ×
    ``tasks_per_node`` processes, :func:`num_tasks`); the resource parameters
    are accepted and have no effect (as with submitit's local executor, which
    does not enforce them either).
    """
    _layout("local", native)
    return {}
