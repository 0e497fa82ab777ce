"""Measure learnloop's headline figures on this machine, through the repo's real code paths.

Figures (each in its own fresh temporary data root; ``~/.learnloop`` is never touched):

1. first-run conversion of the default GGUF into a safetensors checkpoint: a subprocess
   running ``agent.models.resolve_model(None)`` in an empty data root, timed end to end;
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

    python benchmarks/loop_figures.py               # the full run (about 10 minutes here)
    python benchmarks/loop_figures.py --reps 1 --feedback 10 --learn-args "--max-steps 2"
    python benchmarks/loop_figures.py --json --out results/
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.loop_table import GOALS, build_table, print_table

ASK_QUESTION = "What is the capital of France? Answer in one sentence."

GEN_PROMPTS = [
    "Explain how photosynthesis works in detail.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Describe the water cycle step by step.",
    "What are the main differences between Python lists and tuples? Give examples.",
]

# Short questions with a correct answer, used as the "better answer" of a correction.
QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is 12 times 12?", "12 times 12 is 144."),
    ("Who wrote 'Romeo and Juliet'?", "William Shakespeare wrote 'Romeo and Juliet'."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide (CO2)."),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees Celsius."),
    ("Which planet is known as the Red Planet?", "Mars is known as the Red Planet."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest."),
    ("Is the sentiment of 'I loved this movie' positive or negative?", "Positive."),
    ("Is the sentiment of 'The food was cold and bland' positive or negative?", "Negative."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("Name the three primary colors of light.", "Red, green and blue."),
    ("What does CPU stand for?", "CPU stands for central processing unit."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("Give a synonym for 'happy'.", "Joyful."),
    ("What is the opposite of 'ancient'?", "Modern."),
    ("Which animal is known as the king of the jungle?", "The lion."),
    ("What is the freezing point of water in Fahrenheit?", "32 degrees Fahrenheit."),
    (
        "Write a haiku about rain.",
        "Soft rain on the roof\nwhispers to the sleeping town\npuddles hold the sky",
    ),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("How many continents are there?", "There are seven continents."),
    ("What language is spoken in Brazil?", "Portuguese is the main language of Brazil."),
    ("What is 15% of 200?", "15% of 200 is 30."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What is the smallest prime number?", "The smallest prime number is 2."),
    ("Which organ pumps blood through the body?", "The heart."),
    ("In Python, how do you get the length of a list called xs?", "Use len(xs)."),
    ("What is the plural of 'mouse'?", "The plural of 'mouse' is 'mice'."),
    ("Summarize in one sentence: the cat sat on the mat all day.", "A cat spent the day on a mat."),
    ("What year did the first person walk on the Moon?", "1969."),
    ("What is the hardest natural substance?", "Diamond is the hardest natural substance."),
    ("How many minutes are in two hours?", "There are 120 minutes in two hours."),
    ("What is H2O commonly called?", "H2O is water."),
    ("Name a mammal that can fly.", "The bat."),
    ("What is the longest river in Africa?", "The Nile is the longest river in Africa."),
    ("Convert 1 kilometre to metres.", "1 kilometre is 1000 metres."),
    ("What is the main ingredient of guacamole?", "Avocado."),
    ("Which is larger, 0.5 or 0.45?", "0.5 is larger than 0.45."),
]

Row = dict[str, Any]


# --- small helpers ----------------------------------------------------------------------


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


# --- 1. conversion ----------------------------------------------------------------------

CONVERT_CODE = (
    "import json, time\n"
    "t = time.perf_counter()\n"
    "from agent.models import resolve_model\n"
    "r = resolve_model(None, progress=False)\n"
    "print(json.dumps({'path': r.path, 'name': r.name, 'in_process_s': time.perf_counter() - t}))\n"
)


def measure_conversion(work: Path, reps: int) -> Row:
    walls, inproc, path, name, models = [], [], "", "", None
    for i in range(reps):
        root = work / f"convert-{i}"
        log(f"1. converting the default GGUF in a fresh data root ({i + 1}/{reps})")
        wall, out, _ = run_timed(
            [sys.executable, "-c", CONVERT_CODE], root_env(root), 900, "conversion"
        )
        got = last_json(out)
        walls.append(wall)
        inproc.append(got["in_process_s"])
        path, name = got["path"], got["name"]
        if models is None:
            models = root / "models"
    assert models is not None
    return {
        "wall_s": [r3(w) for w in walls],
        "wall_s_median": r3(median(walls)),
        "in_process_s": [r3(x) for x in inproc],
        "checkpoint": path,
        "checkpoint_mb": round(folder_bytes(Path(path)) / 1e6, 1),
        "_models": models,
        "_path": path,
        "_name": name,
    }


# --- 2. ask, import floor, base load ------------------------------------------------------

IMPORT_CODE = "import torch, transformers, langgraph.graph, agent.runtime, agent.backend"


def measure_import_floor(reps: int, env: dict[str, str]) -> Row:
    walls = []
    for _ in range(reps):
        wall, _, _ = run_timed([sys.executable, "-c", IMPORT_CODE], env, 300, "import")
        walls.append(wall)
    return {"wall_s": [r3(w) for w in walls], "wall_s_median": r3(median(walls))}


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


def measure_ask(work: Path, models: Path, reps: int, tokens: int, root_name: str = "ask") -> Row:
    """`learnloop ask` in ``work/root_name``: a fresh root (base active) or an existing one."""
    root = work / root_name
    if not root.exists():
        seed_models(root, models)
    before = sorted(p.name for p in (root / "models").iterdir())
    env = root_env(root)
    cmd = [learnloop_bin(), "ask", ASK_QUESTION, "--json", "--max-new-tokens", str(tokens)]
    walls, answered, turn_ids = [], [], []
    for i in range(reps):
        log(f"2. learnloop ask --json --max-new-tokens {tokens} ({i + 1}/{reps})")
        got, wall, out = run_until_json(cmd, env, 600)
        walls.append(wall)
        answered.append(got)
        turn_ids.append(last_json(out)["turn_id"])
    after = sorted(p.name for p in (root / "models").iterdir())
    if after != before:
        raise RuntimeError(f"`learnloop ask` converted again ({before} -> {after}): cache not warm")
    from storage.store import Store

    use_root(root)
    with Store() as store:
        turns = [store.get_turn(t).log for t in turn_ids]
    gen = [t.total_ms / 1000 for t in turns]
    return {
        "command": " ".join(shlex.quote(c) for c in cmd),
        "wall_s": [r3(w) for w in walls],
        "wall_s_median": r3(median(walls)),
        "answer_printed_s": [r3(a) for a in answered],
        "answer_printed_s_median": r3(median(answered)),
        "exit_after_answer_s_median": r3(
            median([w - a for w, a in zip(walls, answered, strict=True)])
        ),
        "generation_s": [r3(g) for g in gen],
        "completion_tokens": [t.completion_tokens for t in turns],
        "other_before_answer_s_median": r3(
            median([a - g for a, g in zip(answered, gen, strict=True)])
        ),
    }


COLD_LOAD_CODE = (
    "import json, sys, time\n"
    "t0 = time.perf_counter()\n"
    "import torch, transformers\n"
    "from agent.backend import TransformersBackend\n"
    "t1 = time.perf_counter()\n"
    "TransformersBackend(sys.argv[1], sys.argv[2])\n"
    "t2 = time.perf_counter()\n"
    "TransformersBackend(sys.argv[1], sys.argv[2])\n"
    "t3 = time.perf_counter()\n"
    "print(json.dumps({'imports_s': t1 - t0, 'first_s': t2 - t1, 'second_s': t3 - t2}))\n"
)


def measure_cold_load(path: str, name: str, reps: int, env: dict[str, str]) -> Row:
    """TransformersBackend construction in a fresh process, as `learnloop ask` pays it: the
    first one includes transformers' lazily imported tokenizer and model modules."""
    runs = []
    for i in range(reps):
        log(f"2b. TransformersBackend construction in a fresh process ({i + 1}/{reps})")
        _, out, _ = run_timed(
            [sys.executable, "-c", COLD_LOAD_CODE, path, name], env, 300, "cold load"
        )
        runs.append(last_json(out))
    return {key: [r3(r[key]) for r in runs] for key in ("imports_s", "first_s", "second_s")} | {
        "first_s_median": r3(median([r["first_s"] for r in runs])),
        "second_s_median": r3(median([r["second_s"] for r in runs])),
    }


def measure_load(path: str, name: str, reps: int) -> tuple[Row, Any]:
    from agent.backend import TransformersBackend

    times, backend = [], None
    for i in range(reps):
        log(f"2b. TransformersBackend construction ({i + 1}/{reps})")
        backend = None
        gc.collect()
        t = time.perf_counter()
        backend = TransformersBackend(path, name)
        times.append(time.perf_counter() - t)
    return {
        "load_s": [r3(x) for x in times],
        "load_s_first": r3(times[0]),
        "load_s_median": r3(median(times)),
    }, backend


# --- 3. generation ----------------------------------------------------------------------


def measure_generation(backend: Any, reps: int, max_new_tokens: int) -> Row:
    from agent.config import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    warm = backend.stream(
        [{"role": "user", "content": "Hi"}], GenerationConfig(max_new_tokens=8, temperature=0.0)
    )
    for _ in warm:  # untimed warm-up
        pass
    runs = []
    for rep in range(reps):
        for prompt in GEN_PROMPTS:
            log(f"3. generation rep {rep + 1}/{reps}: {prompt[:40]}...")
            t0 = time.perf_counter()
            stream = backend.stream([{"role": "user", "content": prompt}], config)
            first = None
            for piece in stream:
                if piece and first is None:
                    first = time.perf_counter()
            end = time.perf_counter()
            n = stream.completion_tokens
            runs.append(
                {
                    "prompt_tokens": stream.prompt_tokens,
                    "completion_tokens": n,
                    "seconds": end - t0,
                    "ttft_s": None if first is None else first - t0,
                    "tok_s": n / (end - t0),
                    "decode_tok_s": (n - 1) / (end - first) if first and n > 1 else None,
                }
            )
    decode = [r["decode_tok_s"] for r in runs if r["decode_tok_s"]]
    ttft = [r["ttft_s"] for r in runs if r["ttft_s"] is not None]
    return {
        "settings": config.to_dict(),
        "runs": [{k: r3(v) if isinstance(v, float) else v for k, v in r.items()} for r in runs],
        "tok_s_median": r3(median([r["tok_s"] for r in runs])),
        "tok_s_aggregate": r3(
            sum(r["completion_tokens"] for r in runs) / sum(r["seconds"] for r in runs)
        ),
        "decode_tok_s_median": r3(median(decode)) if decode else None,
        "ttft_s_median": r3(median(ttft)) if ttft else None,
        "completion_tokens_median": median([r["completion_tokens"] for r in runs]),
    }


# --- 4. turns, feedback, learning cycle ----------------------------------------------------


def feedback_plan(n: int) -> tuple[int, list[str]]:
    """(regen pairs, labels for the single turns). Pairs give one up and one plain down each;
    singles make up the rest so that ~40 % are up, ~30 % corrections, ~30 % plain downs."""
    pairs = n // 5
    singles = n - 2 * pairs
    corrections = min(singles, round(0.3 * n))
    ups = min(singles - corrections, max(0, round(0.4 * n) - pairs))
    downs = singles - corrections - ups
    labels = ["up"] * ups + ["fix"] * corrections + ["down"] * downs
    random.Random(0).shuffle(labels)
    return pairs, labels


def make_turns_and_feedback(agent: Any, n: int) -> Row:
    store = agent.store
    pairs, labels = feedback_plan(n)
    questions = [QA[i % len(QA)] for i in range(pairs + len(labels))]
    ask_times: list[float] = []
    turn_ids: list[int] = []

    def ask(q: str, regen_of: int | None = None) -> int:
        t = time.perf_counter()
        answer = agent.ask(q, regen_of=regen_of)
        ask_times.append(time.perf_counter() - t)
        turn_ids.append(answer.turn_id)
        return int(answer.turn_id)

    started = time.perf_counter()
    planned: list[tuple[int, str, str | None]] = []  # (turn, rating, correction)
    for i, (q, good) in enumerate(questions):
        log(f"4. turn {len(ask_times) + 1}: {q[:50]}")
        turn = ask(q)
        if i < pairs:  # the user regenerates; one answer liked, the other not
            log(f"4. turn {len(ask_times) + 1}: /regen of turn {turn}")
            sibling = ask("", regen_of=turn)
            first, second = ("down", "up") if i % 2 == 0 else ("up", "down")
            planned += [(turn, first, None), (sibling, second, None)]
        else:
            label = labels[i - pairs]
            if label == "fix":
                planned.append((turn, "down", good))
            else:
                planned.append((turn, label, None))
    turns_s = time.perf_counter() - started

    t = time.perf_counter()
    for turn, rating, correction in planned:
        store.add_feedback(turn, rating, correction=correction, user_name="loop_figures")
    feedback_s = time.perf_counter() - t

    logs = [store.get_turn(tid).log for tid in turn_ids]
    identical = 0
    for turn_log in logs:
        if turn_log.regen_of is not None:
            identical += store.get_turn(turn_log.regen_of).log.answer == turn_log.answer
    counts = {r: sum(1 for _, rr, c in planned if rr == r and c is None) for r in ("up", "down")}
    counts["down_with_correction"] = sum(1 for *_, c in planned if c)
    return {
        "asks": len(ask_times),
        "regens": pairs,
        "regens_identical_to_original": identical,
        "turns_s": r3(turns_s),
        "ask_s_median": r3(median(ask_times)),
        "completion_tokens_total": sum(lg.completion_tokens for lg in logs),
        "feedback_items": len(planned),
        "feedback_counts": counts,
        "feedback_s": r3(feedback_s),
    }


class TreeSampler:
    """Samples the RSS of a process tree every ``interval`` s (psutil), by role."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.peak: dict[str, int] = {"learn": 0, "trainer": 0, "sum": 0}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for p in procs:
                try:
                    cmd = " ".join(p.cmdline())
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                role = (
                    "trainer"
                    if "learning.trainer" in cmd
                    else "learn"
                    if "learnloop" in cmd and Path(p.cmdline()[0]).name != "time"
                    else None
                )
                if role:
                    self.peak[role] = max(self.peak[role], rss)
                    total += rss
            self.peak["sum"] = max(self.peak["sum"], total)
            self.samples += 1
            self._stop.wait(self.interval)


def parse_time_v(text: str) -> Row:
    out: Row = {}
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        out["max_rss_mib"] = round(int(m.group(1)) / 1024, 1)
    m = re.search(r"Elapsed \(wall clock\) time.*: ([\d:.]+)", text)
    if m:
        secs = 0.0
        for part in m.group(1).split(":"):
            secs = secs * 60 + float(part)
        out["elapsed_s"] = secs
    m = re.search(r"Percent of CPU this job got: (\d+)%", text)
    if m:
        out["cpu_percent"] = int(m.group(1))
    return out


def run_learn(root: Path, learn_args: list[str]) -> Row:
    import resource

    env = root_env(root)
    cmd = [learnloop_bin(), "learn", "--json", *learn_args]
    gnu_time = Path("/usr/bin/time")
    time_file = root / "time-v.txt"
    use_time = gnu_time.exists()
    if use_time:
        cmd = [str(gnu_time), "-v", "-o", str(time_file), *cmd]
    try:
        import psutil  # noqa: F401

        have_psutil = True
    except ImportError:
        have_psutil = False
    log("4. learnloop learn --json (this is the long part)")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid) if have_psutil else None
    if sampler:
        sampler.__enter__()
    try:
        out, err = proc.communicate(timeout=3600)
    finally:
        if sampler:
            sampler.__exit__()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-15:])
        raise RuntimeError(f"learnloop learn failed (exit {proc.returncode}):\n{tail}")
    result = last_json(out)
    metrics = result.get("metrics") or {}
    row: Row = {
        "command": " ".join(shlex.quote(c) for c in cmd),
        "wall_s": r3(wall),
        "cycle_s": result.get("seconds"),
        "version": result.get("version"),
        "method": result.get("method"),
        "sft_examples": result.get("sft_examples"),
        "dpo_pairs": result.get("dpo_pairs"),
        "kto_rows": result.get("kto_rows"),
        "heldout": result.get("heldout"),
        "promoted": result.get("promoted"),
        "gate_reasons": result.get("reasons"),
        "feedback_used": result.get("feedback_used"),
        "trainer_s": metrics.get("seconds"),
        "gate_s": metrics.get("gate_seconds"),
        "kto_s": (metrics.get("kto") or {}).get("seconds"),
        "kto_steps": (metrics.get("kto") or {}).get("steps"),
        "sft_s": (metrics.get("sft") or {}).get("seconds"),
        "sft_steps": (metrics.get("sft") or {}).get("steps"),
        "dpo_s": (metrics.get("dpo") or {}).get("seconds"),
        "dpo_steps": (metrics.get("dpo") or {}).get("steps"),
        "trainer_peak_rss_mib_self_reported": metrics.get("peak_rss_mb"),
        "adapter_path": result.get("adapter_path"),
        "adapter_mb": round(folder_bytes(Path(result["adapter_path"])) / 1e6, 2)
        if result.get("adapter_path")
        else None,
    }
    if use_time:
        row["time_v"] = parse_time_v(time_file.read_text())
    if sampler:
        row["sampled_peak_rss_mib"] = {k: round(v / 2**20, 1) for k, v in sampler.peak.items()}
        row["samples"] = sampler.samples
    if not use_time and not sampler:
        # Max over every child this process ever waited for (conversion included): an upper bound.
        row["children_max_rss_mib"] = round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        )
    return row


# --- 5. adapter swap ----------------------------------------------------------------------


def measure_swap(agent: Any, work: Path, reps: int) -> Row:
    backend = agent.backend
    newest = agent.store.versions()[-1].id
    if agent.store.active_version() != newest:  # the gate rejected it: `learnloop activate`
        agent.store.activate(newest, who="benchmark", why="measure the swap")
    t = time.perf_counter()
    switch = agent.sync_version()
    sync_s = time.perf_counter() - t
    if switch is None:
        raise RuntimeError("sync_version found nothing to switch to after the cycle")
    version = switch.version
    path = agent.store.get_version(version).adapter_path
    agent.store.release()
    copies = []
    for i in range(reps):
        copy = work / "adapter-copies" / f"copy{i}"
        shutil.copytree(path, copy)
        copies.append(copy)
    new, to_base, back, back_was_loaded = [], [], [], []
    for i, copy in enumerate(copies):
        log(f"5. adapter switches, round {i + 1}/{reps}")
        new.append(backend.switch(f"bench-copy{i}", str(copy)))
        to_base.append(backend.switch("base", None))
        back_was_loaded.append(version in backend.model.peft_config)
        back.append(backend.switch(version, path))
    row: Row = {
        "version": version,
        "sync_version_first_s": r3(sync_s),
        "switch_first_s": r3(switch.seconds),
        "new_adapter_s": [r3(x) for x in new],
        "to_base_s": [r3(x) for x in to_base],
        "back_to_version_s": [r3(x) for x in back],
        "back_to_version_was_loaded": back_was_loaded,
        "keep_adapters": getattr(backend, "keep_adapters", None),
    }
    if new:
        row["new_adapter_s_median"] = r3(median(new))
        row["to_base_s_median"] = r3(median(to_base))
        row["back_to_version_s_median"] = r3(median(back))
    return row


def measure_cycle_and_swap(
    work: Path, models: Path, n: int, learn_args: list[str], reps: int, ask_tokens: int
) -> tuple[Row, Row, Row]:
    from agent.config import GenerationConfig
    from agent.runtime import load_agent
    from storage.store import Store

    root = work / "cycle"
    seed_models(root, models)
    use_root(root)
    store = Store()
    t = time.perf_counter()
    agent = load_agent(store, None, GenerationConfig(max_new_tokens=48))
    load_agent_s = time.perf_counter() - t
    turns = make_turns_and_feedback(agent, n)
    turns["load_agent_s"] = r3(load_agent_s)
    store.release()  # as the chat REPL does between answers: `learnloop learn` needs the file
    learn = run_learn(root, learn_args)
    swap = measure_swap(agent, work, reps)
    swap["ask_with_version"] = measure_ask(work, models, reps, ask_tokens, root_name="cycle")
    return turns, learn, swap


# --- report -------------------------------------------------------------------------------


# --- main ---------------------------------------------------------------------------------


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
