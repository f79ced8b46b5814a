"""Which process of a multi-process cell this is, read from the launcher's environment.

A cell may run as N processes that share its questions (DDP prediction):

- N SLURM tasks (``srun``; hydra-submitit-launcher with ``hydra.launcher.tasks_per_node=N``):
  ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID`` / ``SLURM_NTASKS_PER_NODE`` / ``SLURM_NNODES``;
- N local submitit tasks (``hydra/launcher=local`` with ``tasks_per_node=N``):
  ``SUBMITIT_LOCAL_GLOBALID`` / ``SUBMITIT_LOCAL_NTASKS`` (one node);
- N ``torchrun`` processes: ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``LOCAL_WORLD_SIZE``.

``process_rank()`` and ``world_size()`` work before any Lightning Trainer (or torch) exists,
so the cell can let only rank 0 write markers, metrics and W&B. ``trainer_overrides()`` gives
the Trainer arguments that make Lightning run the same N processes as one DDP group; with
one process it is empty and the Trainer is exactly ``conf/trainer``.
"""

from __future__ import annotations

import os
from datetime import timedelta

from outro_sweep.errors import ConfigError

# How long a collective (the barrier after prediction: rank 0 waits there for the slowest
# rank before it merges) may wait. Ranks get equal shares of the questions, but per-sample
# time varies (clip lengths, answer lengths), so this is far above torch's 30-minute default;
# a rank that died leaves the others waiting at most this long.
COLLECTIVE_TIMEOUT = timedelta(hours=4)


def _int(name: str, default: int | None = None) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:  # e.g. SLURM's "4(x2)" forms; callers fall back
        return default


def launcher() -> str | None:
    """Who started the processes of a multi-process cell: "slurm", "submitit_local",
    "torchrun", or None for a single process."""
    if (_int("SLURM_NTASKS") or 1) > 1:
        return "slurm"
    if (_int("SUBMITIT_LOCAL_NTASKS") or 1) > 1:
        return "submitit_local"
    if (_int("WORLD_SIZE") or 1) > 1:
        return "torchrun"
    return None


def launch_id() -> str | None:
    """What every process of one launch of a multi-process cell shares and no other launch
    does: the SLURM job id (one per array task and attempt's allocation), the local submitit
    job id, or torchrun's run id (else its rendezvous address). None for one process."""
    source = launcher()
    if source == "slurm":
        return f"slurm:{os.environ.get('SLURM_JOB_ID', '?')}"
    if source == "submitit_local":
        return f"submitit:{os.environ.get('SUBMITIT_LOCAL_JOB_ID', '?')}"
    if source == "torchrun":
        run = os.environ.get("TORCHELASTIC_RUN_ID")
        if run in (None, "", "none"):  # torchrun's default id when none is given: every run has it
            run = os.environ.get("MASTER_ADDR", "?") + ":" + os.environ.get("MASTER_PORT", "?")
        return f"torchrun:{run}"
    return None


# What each launcher sets in every process it starts, beyond the process count: without them
# the count was inherited, not launched (a WORLD_SIZE left in the shell; an sbatch script or an
# salloc shell that runs the cell without srun, where SLURM_NTASKS is the allocation's).
_LAUNCHED_BY = {
    "slurm": ("SLURM_NTASKS", ("SLURM_STEP_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID"),
              "srun (hydra/launcher=slurm with hydra.launcher.tasks_per_node=N)"),
    "submitit_local": ("SUBMITIT_LOCAL_NTASKS", ("SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_JOB_ID"),
                       "hydra/launcher=local with hydra.launcher.tasks_per_node=N"),
    "torchrun": ("WORLD_SIZE", ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"),
                 "torchrun --nproc-per-node=N -m outro_sweep ..."),
}


def check_launcher_environment() -> None:
    """Refuse, in one line, a process count that no launcher started: the cell would wait for
    processes that never come (torch's rendezvous, for hours) or fail deep inside Lightning.
    Runs in the cell's own process (its environment is the launcher's, not the submitter's),
    before the model loads."""
    source = launcher()
    if source is None:
        return
    count, needed, how = _LAUNCHED_BY[source]
    missing = [name for name in needed if not os.environ.get(name, "").strip()]
    if missing:
        raise ConfigError(f"{count}={os.environ[count]} is set but {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not, so no launcher started this process: "
                          f"valid values are {count} unset or 1 (one process), or a launch by {how}")
    if not 0 <= process_rank() < world_size():
        raise ConfigError(f"this process's rank {process_rank()} is outside {count}={os.environ[count]}: valid "
                          f"values are 0..{world_size() - 1}, as set by {how}")


def process_rank() -> int:
    """This process's global rank in its cell (0 for a single-process cell)."""
    source = launcher()
    if source == "slurm":
        return _int("SLURM_PROCID", 0)
    if source == "submitit_local":
        return _int("SUBMITIT_LOCAL_GLOBALID", 0)
    if source == "torchrun":
        return _int("RANK", 0)
    return 0


def world_size() -> int:
    """How many processes run this cell (1 unless launched as several)."""
    source = launcher()
    if source == "slurm":
        return _int("SLURM_NTASKS")
    if source == "submitit_local":
        return _int("SUBMITIT_LOCAL_NTASKS")
    if source == "torchrun":
        return _int("WORLD_SIZE")
    return 1


def is_rank_zero() -> bool:
    return process_rank() == 0


def local_world_size() -> int:
    """Processes on this node (Lightning's ``devices``)."""
    source = launcher()
    if source == "slurm":
        per_node = _int("SLURM_NTASKS_PER_NODE")
        if per_node is None:
            nodes = _int("SLURM_NNODES") or _int("SLURM_JOB_NUM_NODES") or 1
            per_node = _int("SLURM_NTASKS") // nodes
        return per_node
    if source == "submitit_local":
        return _int("SUBMITIT_LOCAL_NTASKS")
    if source == "torchrun":
        return _int("LOCAL_WORLD_SIZE") or _int("WORLD_SIZE")
    return 1


def num_nodes() -> int:
    size, per_node = world_size(), local_world_size()
    if size % per_node:
        raise RuntimeError(f"{size} processes do not split evenly into nodes of {per_node} processes")
    return size // per_node


def trainer_overrides(accelerator: str | None = None) -> dict:
    """Trainer keyword arguments for this process: ``{}`` for one process; for N processes
    ``devices`` (processes on this node), ``num_nodes`` and a DDP ``strategy`` whose cluster
    environment is the launcher's (SLURM with Lightning's auto-requeue off: submitit owns
    requeueing; TorchElastic under torchrun; a one-node environment for local submitit).
    Backend: nccl with CUDA, else gloo; gloo also when ``accelerator`` (the Trainer's, e.g.
    ``cfg.trainer.accelerator``) is "cpu" on a machine that has CUDA."""
    source = launcher()
    if source is None:
        return {}
    import torch
    from lightning.pytorch.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    if source == "slurm":
        environment = SLURMEnvironment(auto_requeue=False)
    elif source == "submitit_local":
        environment = _submitit_local_environment()
    else:
        environment = TorchElasticEnvironment()
    backend = "nccl" if torch.cuda.is_available() and accelerator != "cpu" else "gloo"
    return {
        "devices": local_world_size(),
        "num_nodes": num_nodes(),
        "strategy": DDPStrategy(process_group_backend=backend, cluster_environment=environment,
                                timeout=COLLECTIVE_TIMEOUT),
    }


def _submitit_local_environment():
    """Lightning cluster environment for submitit's local executor: its N tasks of one job on
    this machine; the rendezvous port is derived from the job id (the controller's pid), which
    every task of the job shares and concurrent jobs do not."""
    from lightning.fabric.plugins.environments import ClusterEnvironment

    class SubmititLocalEnvironment(ClusterEnvironment):
        @property
        def creates_processes_externally(self) -> bool:
            return True

        @property
        def main_address(self) -> str:
            return "127.0.0.1"

        @property
        def main_port(self) -> int:
            return 20000 + (_int("SUBMITIT_LOCAL_JOB_ID", 0) % 20000)

        @staticmethod
        def detect() -> bool:
            return (_int("SUBMITIT_LOCAL_NTASKS") or 1) > 1

        def world_size(self) -> int:
            return _int("SUBMITIT_LOCAL_NTASKS")

        def set_world_size(self, size: int) -> None:
            pass

        def global_rank(self) -> int:
            return _int("SUBMITIT_LOCAL_GLOBALID", 0)

        def set_global_rank(self, rank: int) -> None:
            pass

        def local_rank(self) -> int:
            return _int("SUBMITIT_LOCAL_LOCALID", 0)

        def node_rank(self) -> int:
            return 0

    return SubmititLocalEnvironment()
