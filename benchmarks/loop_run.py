"""What every ``loop_figures.py`` measurement shares: logging, fresh data roots, running
a command and timing it, and the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def learnloop_bin() -> str:
    here = Path(sys.executable).with_name("learnloop")
    found = str(here) if here.exists() else shutil.which("learnloop")
    if not found:
        sys.exit("loop_figures: the `learnloop` command is not installed next to this Python")
    return found


def root_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["LEARNLOOP_HOME"] = str(root)
    env.pop("LEARNLOOP_MODEL", None)  # the figures are for the default model
    return env


def use_root(root: Path) -> None:
    """Point this process's library calls at ``root`` (storage.home reads it per call)."""
    os.environ["LEARNLOOP_HOME"] = str(root)


def seed_models(root: Path, models: Path) -> None:
    """Give a fresh data root the converted model (hard links: no copy, same bytes)."""
    root.mkdir(parents=True)
    try:
        shutil.copytree(models, root / "models", copy_function=os.link)
    except OSError:
        shutil.rmtree(root / "models", ignore_errors=True)
        shutil.copytree(models, root / "models")


def run_timed(
    cmd: list[str], env: dict[str, str], timeout: float, what: str
) -> tuple[float, str, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return wall, proc.stdout, proc.stderr


def last_json(stdout: str) -> Any:
    """The JSON document a command printed (the last one if it printed several lines)."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(text.splitlines()[-1])


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def machine_info() -> Row:
    import accelerate
    import datasets
    import peft
    import torch
    import transformers
    import trl

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem = round(int(m.group(1)) / 2**20, 1) if m else None
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu,
        "mem_total_gib": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "loadavg_at_start": os.getloadavg(),
    }


def run_until_json(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[float, float, str]:
    """Run ``cmd``; return (seconds until its stdout held a whole JSON document, seconds until
    it exited, stdout). The gap is the interpreter's teardown after the answer was printed."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    err: list[bytes] = []
    stderr = proc.stderr
    drain = threading.Thread(target=lambda: err.append(stderr.read()), daemon=True)
    drain.start()
    buf, answered = b"", None
    while chunk := os.read(proc.stdout.fileno(), 65536):
        buf += chunk
        if answered is None and buf.rstrip().endswith(b"}"):
            try:
                json.loads(buf)
                answered = time.perf_counter() - started
            except json.JSONDecodeError:
                pass
    proc.wait(timeout=timeout)
    wall = time.perf_counter() - started
    drain.join()
    if proc.returncode != 0 or answered is None:
        tail = "\n".join(b"".join(err).decode(errors="replace").strip().splitlines()[-15:])
        raise RuntimeError(f"{cmd[1]} failed (exit {proc.returncode}):\n{tail}")
    return answered, wall, buf.decode()
