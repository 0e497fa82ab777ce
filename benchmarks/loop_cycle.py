"""Figures 4 and 5 of ``loop_figures.py``: turns and feedback made by the real agent, one
`learnloop learn` with its memory sampled, and adapter swaps in the running agent."""

from __future__ import annotations

import random
import re
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.loop_model import measure_ask
from benchmarks.loop_run import (
    Row,
    folder_bytes,
    last_json,
    learnloop_bin,
    log,
    median,
    r3,
    root_env,
    seed_models,
    use_root,
)

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
                    if "learnloop.learning.trainer" in cmd
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
    from learnloop.agent.config import GenerationConfig
    from learnloop.agent.runtime import load_agent
    from learnloop.storage.store import Store

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
