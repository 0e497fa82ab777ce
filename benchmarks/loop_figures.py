"""Measure learnloop's headline figures on this machine, through the repo's real code paths.

Figures (each in its own fresh temporary data root; ``~/.learnloop`` is never touched):

1. first-run conversion of the default GGUF into a safetensors checkpoint: a subprocess
   running ``learnloop.learning.models.resolve_model(None)`` in an empty data root, timed
   end to end;
2. ``learnloop ask "..." --json --max-new-tokens 32`` with the converted model present:
   wall time of the whole command (process start to exit), plus what the logged turn says
   the generation inside took; the base model load (``TransformersBackend`` construction
   from the safetensors checkpoint), timed in this process;
3. batch-1 generation through ``TransformersBackend.stream`` (greedy): tokens/s and time to
   the first streamed text;
4. one learning cycle: turns made by the real agent (``load_agent`` + ``Agent.ask``, some
   of them ``/regen`` siblings), feedback through ``Store.add_feedback`` (about 40 % up,
   30 % down with a correction, 30 % down), then ``learnloop learn --json`` as a subprocess
   under ``/usr/bin/time -v`` while a thread samples the process tree's memory;
5. adapter hot-swap in the running agent: ``Agent.sync_version()`` right after the cycle made
   its version active, then ``TransformersBackend.switch`` between base, that version and
   fresh copies of its adapter under new names (the path every later cycle takes).

Every number printed is measured by this run; the goals are the project's targets.

    python -m benchmarks.loop_figures               # the full run (about 10 minutes here)
    python -m benchmarks.loop_figures --reps 1 --feedback 10 --learn-args "--max-steps 2"
    python -m benchmarks.loop_figures --json --out results/
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.loop_cycle import measure_cycle_and_swap
from benchmarks.loop_model import (
    measure_ask,
    measure_cold_load,
    measure_conversion,
    measure_generation,
    measure_import_floor,
    measure_load,
)
from benchmarks.loop_run import Row, log, machine_info, root_env, use_root
from benchmarks.loop_table import GOALS, build_table, print_table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the repeated figures")
    ap.add_argument(
        "--convert-reps", type=int, default=1, help="conversions, each in its own fresh root"
    )
    ap.add_argument("--feedback", type=int, default=50, help="feedback items for the cycle")
    ap.add_argument("--ask-tokens", type=int, default=32, help="--max-new-tokens for `ask`")
    ap.add_argument("--gen-tokens", type=int, default=128, help="max_new_tokens, figure 3")
    ap.add_argument(
        "--learn-args",
        default="",
        help="extra flags for `learnloop learn`, e.g. '--max-steps 2' for a quick check",
    )
    ap.add_argument("--skip-cycle", action="store_true", help="skip figures 4 and 5")
    ap.add_argument("--json", action="store_true", help="print one JSON object, not a table")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON into DIR")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data roots")
    args = ap.parse_args(argv)
    if args.reps < 1 or args.convert_reps < 1 or args.feedback < 2:
        ap.error("--reps and --convert-reps must be >= 1, --feedback >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="learnloop-figures-"))
    use_root(work / "unused")  # nothing in this process may fall back to ~/.learnloop
    os.environ.pop("LEARNLOOP_MODEL", None)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    figures: Row = {}
    loadavg: dict[str, Any] = {}
    try:
        machine = machine_info()

        def mark(section: str) -> None:
            loadavg[section] = os.getloadavg()

        mark("conversion")
        conv = measure_conversion(work, args.convert_reps)
        models, path, name = conv.pop("_models"), conv.pop("_path"), conv.pop("_name")
        figures["conversion"] = conv
        mark("import_floor")
        figures["import_floor"] = measure_import_floor(args.reps, root_env(work / "unused"))
        mark("ask")
        figures["ask"] = measure_ask(work, models, args.reps, args.ask_tokens)
        mark("load")
        figures["load_cold"] = measure_cold_load(path, name, args.reps, root_env(work / "unused"))
        figures["load"], backend = measure_load(path, name, args.reps)
        mark("generation")
        figures["generation"] = measure_generation(backend, args.reps, args.gen_tokens)
        del backend
        gc.collect()
        if not args.skip_cycle:
            mark("cycle")
            turns, learn, swap = measure_cycle_and_swap(
                work,
                models,
                args.feedback,
                shlex.split(args.learn_args),
                args.reps,
                args.ask_tokens,
            )
            figures.update(turns=turns, learn=learn, swap=swap)
    finally:
        if args.keep:
            log(f"data roots kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    machine["loadavg_at_end"] = os.getloadavg()
    machine["loadavg_by_section"] = loadavg
    table = build_table(figures)
    result = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv,
        "total_s": round(time.perf_counter() - started, 1),
        "goals": GOALS,
        "machine": machine,
        "figures": figures,
        "table": table,
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path_out = args.out / f"loop_figures-{datetime.now():%Y%m%d-%H%M%S}.json"
        path_out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        log(f"results written to {path_out}")
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_table(table)
        print(
            f"\n{machine['cpu_count']} CPUs ({machine['cpu_model']}), torch {machine['torch']}, "
            f"transformers {machine['transformers']}, trl {machine['trl']}, "
            f"peft {machine['peft']}; total {result['total_s']} s; load average "
            f"{machine['loadavg_at_start']} -> {machine['loadavg_at_end']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
