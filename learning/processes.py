"""How the trainer child runs: one process (``python -m learnloop.learning.trainer RUN_DIR``)
or several started by ``accelerate launch`` (learn settings ``processes`` and
``accelerate_config``), and what each of several processes does.

Several processes train with torch's DistributedDataParallel through accelerate's
torchrun launcher (its ``--multi_gpu`` mode, which on a machine without GPUs runs the
processes on the CPU over gloo); an accelerate config file (``accelerate config`` writes
one) can choose DeepSpeed or FSDP and mixed precision instead.

Invariants:

- Every process reads the same request and trains on its share of each optimizer step:
  a step still holds ``batch_size`` examples in all (``per_device_batch``), so a run's
  steps, and the recipe they follow, do not depend on the process count.
- Only rank 0 writes: progress lines, the adapter, ``metrics.json`` and the gate (which
  it runs alone, after the others have left). Its metrics count the CPU-seconds (and the
  energy estimate made from them) and the peak memory of all processes together.
- Every process watches the cycle that started the launch (:data:`CYCLE_ENV`) besides
  its own parent (the launcher), so a killed cycle stops them all within a second.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from learnloop.storage.errors import UsageError

TRAINER_MODULE = "learnloop.learning.trainer"
# The pid of the process that started the trainer (the cycle); the launcher sits between.
CYCLE_ENV = "LEARNLOOP_CYCLE_PID"


def trainer_command(run_dir: Path, config: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run the trainer child on ``run_dir``, for
    the learn settings ``config`` (a LearnConfig's dict, as request.json holds it)."""
    env = {**os.environ, CYCLE_ENV: str(os.getpid())}
    module = ["-m", TRAINER_MODULE, str(run_dir)]
    processes = int(config.get("processes", 1))
    accelerate_config = str(config.get("accelerate_config") or "")
    if processes == 1 and not accelerate_config:
        return [sys.executable, *module], env
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    launch += ["--num_processes", str(processes), "--num_machines", "1"]
    launch += ["--main_process_port", "0"]  # a free port, chosen by accelerate
    path = launch_config(accelerate_config)
    if path is not None:
        launch += ["--config_file", str(path)]
    else:
        launch += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*launch, *module], env


def launch_config(accelerate_config: str) -> Path | None:
    """The accelerate config file a learn setting names (None: none named); a missing
    one is a UsageError, raised before a run is recorded (learning/cycle.py)."""
    if not accelerate_config:
        return None
    path = Path(accelerate_config).expanduser()
    if not path.is_file():
        raise UsageError(f"accelerate_config: no file {path}; `accelerate config` writes one")
    return path


def cycle_pid() -> int | None:
    """The cycle that started this trainer through a launcher (None: started directly)."""
    value = os.environ.get(CYCLE_ENV, "")
    return int(value) if value.isdigit() else None


def rank() -> int:
    """This process's rank among the training processes (0 when alone)."""
    return int(os.environ.get("RANK", "0"))


def world() -> int:
    """How many processes train together (1 when alone)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def per_device_batch(batch_size: int) -> int:
    """Each process's share of an optimizer step of ``batch_size`` examples (rounded up:
    with 3 processes a step of 4 holds 6)."""
    return math.ceil(batch_size / world())


def join() -> None:
    """Start the process group of several training processes (a no-op when alone), so
    that they can meet even when no trainer is made (a run that only gates)."""
    if world() > 1:
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def others_usage(cpu_seconds: float, peak_rss_mb: float) -> tuple[float, float]:
    """Every process passes its CPU-seconds and peak memory so far; rank 0 gets the sums
    over the other processes (0, 0 when alone), then all leave the process group."""
    if world() == 1:
        return 0.0, 0.0
    import torch.distributed as dist

    gathered: list[Any] = [None] * world()
    dist.all_gather_object(gathered, (cpu_seconds, peak_rss_mb))
    dist.destroy_process_group()
    others = [usage for index, usage in enumerate(gathered) if index != rank()]
    return sum(u[0] for u in others), sum(u[1] for u in others)
