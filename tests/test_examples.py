"""The programs in examples/, each run as its docstring says a user runs it: ``python
examples/NAME.py ...`` in a subprocess from the checkout, on the tiny model and the test's
own data root (passed as LEARNLOOP_HOME), with settings that keep each run short.

Each test checks what a reader of the example would check: the answer came back, the
feedback was stored, a version was made and answered next, the export loads, the TRL run
saved an adapter; and that bad input ends in one line, exit 1, and changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from learnloop.storage.store import Store
from tests.helpers import make_log
from tests.serving import free_port, serve_process

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.py"))
# the tiny model's version is promoted without the gate: its answers cannot pass a real
# one, and the gate has its own tests
FAST_LEARN = ("--max-steps", "2", "--no-gate")


def run_example(
    name: str, *args: str, home: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LEARNLOOP_HOME": str(home)}
    command = [sys.executable, str(REPO / "examples" / name), *args]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def succeeded(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """A bad input's answer: exit 1 and one line on stderr (no traceback)."""
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error"), done.stderr
    return lines[0]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_each_example_says_what_it_shows_and_takes_help_and_a_model(
    example: Path, home: Path
) -> None:
    assert example.read_text().startswith('"""'), "a module docstring comes first"
    usage = succeeded(run_example(example.name, "--help", home=home))
    assert "usage:" in usage and "--model" in usage
    assert len(example.read_text().splitlines()) <= 130, "examples are documentation: short"


# -- examples/openai_client.py -------------------------------------------------------------


def test_the_openai_client_chats_rates_and_learns_against_learnloop_serve(
    tiny_model_dir: Path, home: Path, tmp_path: Path
) -> None:
    flags = ("--max-new-tokens", "8", "--auto-learn", "false")
    with serve_process(tiny_model_dir, home, tmp_path / "serve.log", *flags) as served:
        url = f"{served}/v1"
        client = ("--url", url, "--max-tokens", "8", *FAST_LEARN)
        streamed = succeeded(
            run_example("openai_client.py", *client, "--stream", "--correction", "Rome.", home=home)
        )
        assert "[turn 1 · base]" in streamed
        assert "rated turn 1 down with a correction" in streamed
        assert "learning run 1 started" in streamed and "v1 promoted" in streamed
        assert "[turn 2 · v1]" in streamed  # the server swapped without a restart

        plain = succeeded(run_example("openai_client.py", *client, home=home))
        assert "[turn 3 · v1]" in plain and "rated turn 3 up" in plain
        assert "[turn 4 · v2]" in plain

        with httpx.Client(base_url=url, timeout=30) as http:
            rated = {t["turn_id"]: t["feedback"] for t in http.get("/log").json()}
    assert [(f["rating"], f["correction"]) for f in rated[1]] == [("down", "Rome.")]
    assert [f["rating"] for f in rated[3]] == ["up"]


def test_the_openai_client_without_a_server_says_so_in_one_line(home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    line = refused(run_example("openai_client.py", "--url", url, home=home))
    assert url in line and "learnloop serve" in line


# -- examples/own_graph.py -----------------------------------------------------------------


def test_own_graph_logs_its_turns_and_answers_from_the_version_learned_from_them(
    tiny_model_dir: Path, home: Path
) -> None:
    args = ("--model", str(tiny_model_dir), "--max-new-tokens", "8", *FAST_LEARN)
    out = succeeded(run_example("own_graph.py", *args, home=home))
    assert "[turn 1 · base]" in out and "[turn 2 · v1]" in out
    assert "the second answer came from v1" in out

    with Store() as store:
        first, second = store.thread_history("own-graph")
        assert first.log.nodes == ["draft"]  # the user's node that called the model
        assert first.log.messages[0]["role"] == "system"
        assert (first.log.version, second.log.version) == ("base", "v1")
        [rating] = store.feedback_examples()
        assert rating.turn_id == first.id and rating.correction == "The capital of Italy is Rome."
        assert store.active_version() == "v1"


# -- examples/own_tool_graph.py ------------------------------------------------------------


def test_own_tool_graph_learns_from_a_corrected_trajectory_and_answers_from_that_version(
    tiny_model_dir: Path, home: Path
) -> None:
    args = ("--model", str(tiny_model_dir), "--max-new-tokens", "8", *FAST_LEARN)
    out = succeeded(run_example("own_tool_graph.py", *args, home=home))
    assert "[turn 1 · base]" in out and "[turn 2 · v1]" in out
    assert "the second answer came from v1" in out

    with Store() as store:  # the random tiny model calls no tool: tests/test_logged_tools.py
        first, second = store.thread_history("own-tool-graph")  # has graphs whose model does
        assert first.log.nodes == ["agent"] and second.log.version == "v1"
        assert first.log.tools[0]["function"]["name"] == "multiply"  # bind_tools offered it
        [rating] = store.feedback_examples()
        fixed = rating.correction_messages or []
        assert [m["role"] for m in fixed] == ["assistant", "tool", "assistant"]
        assert fixed[0]["tool_calls"][0]["function"]["name"] == "multiply"
        assert fixed[1]["content"] == "231568" and rating.correction == "2824 times 82 is 231568."
        assert store.active_version() == "v1"


# -- examples/teach_from_jsonl.py ----------------------------------------------------------


def test_teaching_a_labelled_file_raises_its_accuracy(
    tiny_model_dir: Path, home: Path, tmp_path: Path
) -> None:
    rows = tmp_path / "reviews.jsonl"
    texts = ["I loved every minute of it.", "Brilliant acting.", "A joy from start to end."]
    rows.write_text("".join(json.dumps({"text": t, "label": "positive"}) + "\n" for t in texts))
    args = ["--model", str(tiny_model_dir), "--labels", "positive,negative"]
    # enough steps, at a rate high enough and on enough modules, for the tiny model to
    # learn to say one word (tried on two sets of texts; fewer modules learned newlines)
    args += ["--max-new-tokens", "4", "--max-steps", "10", "--no-gate"]
    args += ["--set", "sft_learning_rate=0.01", "--set", "batch_size=3"]
    args += ["--set", "target_modules=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"]
    out = succeeded(run_example("teach_from_jsonl.py", str(rows), *args, home=home))

    before = re.search(r"taught 3 rows; accuracy before: ([\d.]+)", out)
    after = re.search(r"accuracy after: ([\d.]+) \(answered by v1\)", out)
    assert before is not None and after is not None, out
    assert float(after[1]) > float(before[1])
    assert "learned v1 (3 SFT examples): promoted" in out
    with Store() as store:
        examples = store.feedback_examples()
        assert [e.correction for e in examples] == ["positive"] * 3  # each 👎 with the label
        assert len(store.recent_turns(100)) == 6  # taught, then measured again


def test_a_bad_labelled_file_is_one_line_and_nothing_is_asked(home: Path, tmp_path: Path) -> None:
    rows = tmp_path / "bad.jsonl"
    rows.write_text('{"text": "fine", "label": "positive"}\n{"text": "no label"}\n')
    line = refused(run_example("teach_from_jsonl.py", str(rows), "--model", "unused", home=home))
    assert f"{rows} line 2" in line and '"label" is missing' in line
    assert not home.exists()  # no store was even opened


# -- examples/export_then_trl.py -----------------------------------------------------------


def seed_feedback(home: Path) -> None:
    """Rated turns in three threads, as a chat leaves them: two corrections and a 👍."""
    with Store() as store:
        for n, (rating, correction) in enumerate([("down", "Rome."), ("up", None), ("down", "4.")]):
            turn = store.add_turn(make_log(f"question {n}", "an answer", thread_id=f"t{n}"))
            store.add_feedback(turn, rating, correction=correction)


def test_the_export_trains_with_trl_outside_learnloop(
    tiny_model_dir: Path, home: Path, tmp_path: Path
) -> None:
    seed_feedback(home)
    out_dir = tmp_path / "my-export"
    args = ("--out", str(out_dir), "--model", str(tiny_model_dir), "--max-steps", "3")
    out = succeeded(run_example("export_then_trl.py", *args, home=home))

    assert "exported current feedback" in out
    manifest = json.loads((out_dir / "data" / "manifest.json").read_text())
    sft = next(f for f in manifest["files"] if f["file"] == "sft.jsonl")
    from datasets import load_dataset

    rows = load_dataset("json", data_files=str(out_dir / "data" / "sft.jsonl"), split="train")
    assert len(rows) == sft["rows"] > 0 and set(rows.column_names) == {"prompt", "completion"}

    losses = re.search(r"([\d.]+) before, ([\d.]+) after training", out)
    assert losses is not None, out
    assert float(losses[2]) < float(losses[1])  # the loss on the exported rows went down
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    PeftModel.from_pretrained(base, str(out_dir / "adapter"))  # loads back as an adapter


def test_export_into_a_used_folder_is_refused_and_the_folder_left_alone(
    home: Path, tmp_path: Path
) -> None:
    seed_feedback(home)
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    line = refused(run_example("export_then_trl.py", "--out", str(used), home=home))
    assert "is not empty" in line
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
