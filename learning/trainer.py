"""The training child process: ``python -m learnloop.learning.trainer RUN_DIR``.

The learning cycle writes a frozen dataset snapshot into ``RUN_DIR`` and starts this
module as a separate process, so a crash, an OOM kill or a ``kill -9`` never touches the
chat process or the database. This module never opens the database: files in, files out.

Input, ``RUN_DIR/request.json``::

    {"base_model": "/abs/path/to/checkpoint", "config": {...LearnConfig fields...},
     "sft": "sft.jsonl", "dpo": "dpo.jsonl", "kto": "kto.jsonl", "gate": {...} | null}

``sft`` / ``dpo`` / ``kto`` name JSON-lines files inside ``RUN_DIR`` in TRL's
conversational shapes: SFT rows are prompt-completion (``{"prompt": [messages],
"completion": [assistant message]}``), DPO rows are preference pairs (``{"prompt":
[...], "chosen": [...], "rejected": [...]}``), KTO rows are unpaired
(``{"prompt", "completion", "label": bool}``). A missing or empty file skips that stage;
at least one stage must have rows (learning/request.py checks all this). ``gate`` names
the held-out pairs and corrections, the control set and the active version's adapter
(learning/snapshot.py writes them).

Output, all inside ``RUN_DIR``:

- ``progress.jsonl``: one flushed JSON line per event, ``{"stage": "load" | "sft" |
  "dpo" | "kto" | "save" | "gate" | "done", "step": int, "total": int, "loss": float |
  null, "t": unix time}``; the parent tails it to draw a progress bar. Training stages
  write a line when they start (step 0) and one per optimizer step; the gate one per
  prompt measured (step k of total).
- ``adapter/``: the PEFT LoRA adapter (``adapter_config.json`` +
  ``adapter_model.safetensors``). It is written to ``adapter.tmp`` and renamed, so a
  folder named ``adapter`` is always complete; a killed run leaves none.
- ``metrics.json`` (written after the adapter, also by rename): per stage examples,
  steps, train_loss, seconds and the per-step losses (DPO adds the last logged
  ``rewards/accuracies`` and ``rewards/margins``); a skipped stage is ``null``. Plus
  ``peak_rss_mb``, total ``seconds``, ``gate_seconds``, ``trainable_params`` and
  ``niceness`` (the CPU priority it trained at, :data:`NICENESS` above its parent's) and
  ``session_niceness`` (its scheduling group's, :data:`NICENESS`; None without autogroups),
  ``cpu_seconds`` (user + system time of all its threads; ``gate_cpu_seconds`` of them
  the gate's) and ``energy_wh``, an estimate: CPU-seconds x ``--watts-per-cpu`` (a
  VM has no power meter; see the README's "What a cycle costs" for the error), and
  ``processes``: how many trained (learning/processes.py; with several, rank 0 writes
  every output, and the CPU-seconds, energy and peak memory count them all).
- ``gate.json`` when a gate was asked for: the candidate and the active version measured
  on the same held-out feedback and control set (learning/evaluate.py).
- ``trainer.log``: everything the libraries print, and the traceback of a failure.

Exit status 0 on success. On failure exactly one line goes to stderr, ``learnloop
trainer: <what went wrong>``, and the status is non-zero (2: bad run folder or request,
1: training failed, 3: the parent died, see :func:`watch_parent`).

Everything the trainer writes is private to its owner (umask 077, as in the parent).

Invariants:

- A cycle trains a fresh LoRA adapter from the base checkpoint (``--start fresh``), or a
  copy of the active version's adapter (``start_adapter``, ``--start active``), loaded
  trainable; the folder it was loaded from is only read. A federated round's fresh
  adapter gets the global weights first (``start_weights``, a safetensors file in the
  run folder); with ``"train": false`` nothing trains: the adapter is saved and gated as
  given (a node adopting a round's global adapter, learning/federated/node.py). Either
  way DPO and KTO get an explicit reference: TRL copies the adapter as it stands when
  the stage starts (below), never "the adapter disabled", which is the base and the
  wrong reference for a trained adapter (TRL issue 4723).
- Within a cycle, SFT runs first, then DPO (or KTO) on the same PeftModel. TRL 1.16's DPOTrainer,
  given a PeftModel and no ``ref_model``, freezes a copy of the current adapter as a
  second adapter named ``ref`` and computes reference log-probs with it (KTOTrainer does
  the same): the DPO
  reference is the policy as SFT left it (the standard SFT-then-DPO recipe), and equals
  the base model when there was no SFT stage (fresh adapter, B = 0). Only the trained
  ``default`` adapter is saved.
- The base checkpoint is only read, never written.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learnloop.learning import processes
from learnloop.learning.config import LearnConfig
from learnloop.learning.request import (
    DPO_KEYS,
    SFT_KEYS,
    Request,
    TrainerError,
    read_request,
    read_rows,
)
from learnloop.learning.trainer_output import Progress, console_to_log, write_json_atomic
from learnloop.learning.trainer_stages import train_dpo, train_kto, train_sft
from learnloop.storage.home import keep_private, pid_alive

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GATE_FILE = "gate.json"
PROGRESS_FILE = "progress.jsonl"
METRICS_FILE = "metrics.json"
# The child yields the CPU to its parent's process: a server answering chats while a
# cycle trains (agent/batching.py) then slows down as little as the cores allow.
NICENESS = 10
ADAPTER_DIR = "adapter"
LOG_FILE = "trainer.log"
PARENT_POLL_SECONDS = 0.5
PARENT_GONE = "the learning cycle that started this trainer is gone; stopping"
ORPHAN_STATUS = 3


# --- the model and the gate --------------------------------------------------------------


def load_base(base_model: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    # Loaded on the CPU; the Trainer moves it to the GPU when there is one.
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def add_fresh_adapter(model: PreTrainedModel, config: LearnConfig) -> PeftModel:
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    set_seed(config.seed)  # the LoRA A matrices are initialised at random
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def load_start_adapter(model: PreTrainedModel, adapter: Path) -> PeftModel:
    """The active version's adapter, to train further (``--start active``): its own rank
    and modules, whatever the config's LoRA settings say."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)


def load_weights(model: PeftModel, weights: Path) -> None:
    """Put the LoRA weights of ``weights`` (a safetensors file in PEFT's saved names,
    such as a federated round's global adapter) into the fresh adapter; they must name
    exactly its tensors, with its shapes."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    given = load_file(str(weights))
    own = get_peft_model_state_dict(model)
    wrong = sorted(
        name for name in set(own) | set(given)
        if name not in own or name not in given or own[name].shape != given[name].shape
    )  # fmt: skip
    if wrong:
        raise TrainerError(
            f"the start weights do not fit this adapter (the LoRA settings differ): {wrong[0]}"
            + (f" and {len(wrong) - 1} more" if len(wrong) > 1 else "")
        )
    set_peft_model_state_dict(model, {k: v.to(own[k].dtype) for k, v in given.items()})


def freeze_a(model: PeftModel) -> None:
    """FFA-LoRA (``--lora-freeze-a``): only the B matrices train; every A keeps the value
    the shared seed (or the start weights) gave it."""
    for name, param in model.named_parameters():
        if ".lora_A." in name:
            param.requires_grad_(False)


def measure_gate(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    request: Request,
    run_dir: Path,
    progress: Progress,
) -> dict[str, Any]:
    """Candidate vs. active version on the held-out feedback (or what was taught) and the
    control set; one progress line per prompt measured."""
    from learnloop.learning.evaluate import compare

    gate = request.gate or {}
    data = {
        "pairs": read_rows(run_dir, gate.get("pairs"), DPO_KEYS),
        "fixes": read_rows(run_dir, gate.get("fixes"), SFT_KEYS),
        "control": read_plain(run_dir, gate.get("control")),
        "task": read_plain(run_dir, gate.get("task")),
        "taught_fixes": read_rows(run_dir, gate.get("taught_fixes"), SFT_KEYS),
        "taught_liked": read_plain(run_dir, gate.get("taught_liked")),
    }
    return compare(model, tokenizer, gate, data, lambda k, n: progress.write("gate", k, n))


def read_plain(run_dir: Path, name: object) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file learnloop wrote itself (control set, task rows)."""
    path = run_dir / str(name)
    if not name or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_adapter(model: PeftModel, run_dir: Path) -> Path:
    """Write the adapter under a temporary name, then rename it into place."""
    tmp, final = run_dir / (ADAPTER_DIR + ".tmp"), run_dir / ADAPTER_DIR
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed earlier attempt
    model.save_pretrained(str(tmp), selected_adapters=["default"])
    os.replace(tmp, final)
    return final


def count_trainable(model: PeftModel) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_warning()
    transformers.logging.disable_progress_bar()


def run(run_dir: Path) -> dict[str, Any]:
    """Do the whole job; returns the metrics that were written."""
    started = time.monotonic()
    request = read_request(run_dir)
    if (run_dir / ADAPTER_DIR).exists():
        raise TrainerError(f"{run_dir / ADAPTER_DIR} exists already; adapters are never rewritten")
    # Several training processes: rank 0 alone reports, saves and gates (processes.py).
    progress = Progress(run_dir / PROGRESS_FILE if processes.rank() == 0 else Path(os.devnull))
    progress.write("load")
    quiet_libraries()
    processes.join()
    base, tokenizer = load_base(request.base_model)
    if request.start_adapter is not None:
        model = load_start_adapter(base, request.start_adapter)
    else:
        model = add_fresh_adapter(base, request.config)
    if request.start_weights is not None:
        load_weights(model, request.start_weights)
    if request.config.lora_freeze_a:
        freeze_a(model)
    trainable = count_trainable(model)
    stage_args = (request.config, run_dir, progress)
    continuing = request.start_adapter is not None or request.start_weights is not None
    train = request.train
    sft = (
        train_sft(model, tokenizer, request.sft, request.sft_corrections, *stage_args, continuing)
        if request.sft and train
        else None
    )
    dpo = train_dpo(model, tokenizer, request.dpo, *stage_args) if request.dpo and train else None
    kto = train_kto(model, tokenizer, request.kto, *stage_args) if request.kto and train else None
    others_cpu, others_rss = processes.others_usage(cpu_seconds(), peak_rss_mb())
    if processes.rank() != 0:
        return {}
    progress.write("save")
    save_adapter(model, run_dir)
    gate_started, gate_cpu = time.monotonic(), cpu_seconds()
    if request.gate is not None:
        progress.write("gate")
        measured = measure_gate(model, tokenizer, request, run_dir, progress)
        write_json_atomic(run_dir / GATE_FILE, measured)
    gate_seconds = round(time.monotonic() - gate_started, 3) if request.gate else None
    total_cpu = cpu_seconds() + others_cpu
    metrics = {
        "sft": sft,
        "dpo": dpo,
        "kto": kto,
        "peak_rss_mb": round(peak_rss_mb() + others_rss, 1),
        "processes": processes.world(),
        "seconds": round(time.monotonic() - started, 3),
        "gate_seconds": gate_seconds,
        "trainable_params": trainable,
        "niceness": os.nice(0),
        "session_niceness": session_niceness(),
        "cpu_seconds": round(total_cpu, 1),
        "gate_cpu_seconds": round(cpu_seconds() - gate_cpu, 1) if request.gate else None,
        "energy_wh": round(total_cpu * request.config.watts_per_cpu / 3600, 3),
    }
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    progress.write("done")
    return metrics


# --- the process ------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all its threads together."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """The most memory this process has held so far, in MiB: Linux's VmHWM, the high-water
    mark of this program's own memory. (``ru_maxrss`` is not: across fork and exec it
    keeps the parent's peak, so a trainer started by a 5 GB test worker reported 5.5 GB.)"""
    try:
        status = Path("/proc/self/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration, ValueError, IndexError):  # not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fail(message: str) -> str:
    return "learnloop trainer: " + " ".join(message.split())


def watch_parent(
    parent: int, report_fds: tuple[int, ...], cycle: int | None = None
) -> threading.Thread:
    """Stop this process within about a second of its parent's death, in any stage, or
    of the ``cycle``'s, when a launcher started it on the cycle's behalf (processes.py).

    The child runs in its own session (Ctrl-C in the chat must not reach it), so nothing
    else stops it when the cycle that started it is killed; an orphan would go on loading,
    training and measuring for nobody, and hold the CPU from the next cycle's trainer. A
    thread watches because the main thread spends long stretches inside one library call
    (loading the model, a step, the gate's generation) where no callback runs. It ends
    the process with ``os._exit``: nothing the orphan made is wanted, and a half-written
    adapter is only ever ``adapter.tmp``. The line goes to ``report_fds`` with plain
    writes, which take no lock the main thread may hold."""

    def watch() -> None:
        # A dead parent's children pass to another process.
        while os.getppid() == parent and (cycle is None or pid_alive(cycle)):
            time.sleep(PARENT_POLL_SECONDS)
        line = (fail(PARENT_GONE) + "\n").encode()
        for fd in report_fds:
            with contextlib.suppress(OSError):
                os.write(fd, line)
        os._exit(ORPHAN_STATUS)

    thread = threading.Thread(target=watch, name="learnloop-parent-watch", daemon=True)
    thread.start()
    return thread


def lower_priority() -> None:
    """Run at :data:`NICENESS` below the parent. The child leads a session of its own
    (so that a kill reaches its whole group), and where the kernel groups the tasks of
    each session for scheduling (autogroup, on by default), a process's nice value only
    weighs against the tasks of its own session: the session's group gets the nice value
    too, or the trainer takes a core from the server whatever its nice."""
    os.nice(NICENESS)
    with contextlib.suppress(OSError):  # no autogroups (another OS, another kernel): nice holds
        Path("/proc/self/autogroup").write_text(f"{NICENESS}\n")


def session_niceness() -> int | None:
    """The nice value of this process's scheduling group (None: no autogroups here)."""
    try:
        return int(Path("/proc/self/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if argv is None:  # a process of its own (not a test calling main): every thread it
        lower_priority()  # starts, torch's included, inherits the lower priority
    if len(args) != 1:
        print(fail("usage: python -m learnloop.learning.trainer RUN_DIR"), file=sys.stderr)
        return 2
    parent = os.getppid()  # first: the watcher compares with the parent that started us
    keep_private()  # the adapter and the run files hold what users wrote
    run_dir = Path(args[0]).resolve()
    if not run_dir.is_dir():
        print(fail(f"run folder {run_dir} does not exist"), file=sys.stderr)
        return 2
    log_path = run_dir / LOG_FILE
    with console_to_log(log_path) as real_err:
        watch_parent(parent, (2, real_err.fileno()), processes.cycle_pid())  # fd 2: the log
        try:
            run(run_dir)
        except TrainerError as exc:
            for out in (sys.stderr, real_err):  # the log, then the parent
                print(fail(str(exc)), file=out, flush=True)
            return 2
        except Exception as exc:  # any failure: one line here, the traceback in the log
            traceback.print_exc(file=sys.stderr)  # fd 2 is the log here
            reason = f"{type(exc).__name__}: {exc}"
            print(fail(f"training failed: {reason} (traceback in {log_path})"), file=real_err)
            real_err.flush()
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
