"""``--engine vllm`` (agent/vllm_engine.py) against vLLM's interface (tests/vllm_kit.py:
the stand-in here, the real vLLM with ``LEARNLOOP_TEST_VLLM=real`` on a GPU machine):
new files under a version name never answer with the old ones (vLLM caches adapters by
id), a stop rule ends vLLM's request too, a full server refuses with a 503, an interrupt
ends the answer; without vLLM the engine is one clear error. The hot-swap test
(tests/test_hot_swap.py) runs against it as well."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.random_adapter import save_random_adapter
from learnloop.agent.backend import Pin
from learnloop.agent.batching import Overloaded
from learnloop.agent.config import GenerationConfig, ServingConfig
from learnloop.learning.adapters import checksum
from tests.test_orphan_trainer import wait_for
from tests.vllm_kit import use_vllm

PROMPT = [{"role": "user", "content": "Name three colours."}]
GREEDY = GenerationConfig(temperature=0, max_new_tokens=8, whole_answer=True)


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> Any:
    from learnloop.agent.engines import load_backend
    from learnloop.learning.models import resolve_model

    use_vllm(monkeypatch)
    model = resolve_model(str(tiny_model_dir), progress=False)
    return load_backend(model, ServingConfig(engine="vllm", max_batch=1, max_queue=0))


def answer(backend: Any, pin: Pin | None = None, config: GenerationConfig = GREEDY) -> str:
    return "".join(backend.stream(PROMPT, config, pin))  # type: ignore[arg-type]


def adapter(model: Path, folder: Path, seed: int) -> Pin:
    save_random_adapter(model, folder, seed=seed, modules=["q_proj", "v_proj"], r=4)
    return Pin("v1", str(folder), checksum(folder))


def test_new_files_under_a_version_name_answer_with_the_new_weights(
    backend: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    first = adapter(tiny_model_dir, tmp_path / "a", seed=1)
    second = adapter(tiny_model_dir, tmp_path / "b", seed=2)
    fresh = answer(backend, Pin("v7", second.adapter_path, second.checksum))
    before, after = answer(backend, first), answer(backend, second)
    assert len({answer(backend, Pin("base")), before, after}) == 3, "the adapters differ"
    assert after == fresh, "v1's new files answer as they do under a name never seen"
    assert answer(backend, first) == before


def test_a_stop_string_ends_the_answer_and_the_request(
    backend: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    pin = adapter(tiny_model_dir, tmp_path / "a", seed=1)  # the base says only newlines
    whole = answer(backend, pin)
    cut = whole[len(whole) // 2 :].strip()[:2]
    assert cut, whole
    stopping = GenerationConfig(**{**GREEDY.to_dict(), "stop": (cut,)})
    stream = backend.stream(PROMPT, stopping, pin)
    text = "".join(stream)
    assert text == whole[: whole.index(cut)]
    assert stream.stopped_by == "stop" and not stream.interrupted
    assert wait_for(lambda: backend.load == (0, 0), 10), "vLLM's request ended too"


def test_a_full_engine_refuses_and_an_interrupt_ends_the_answer(backend: Any) -> None:
    long = GenerationConfig(temperature=0, max_new_tokens=400, whole_answer=True)
    first = backend.stream(PROMPT, long)  # the base: newlines, never an end of turn
    pieces = iter(first)
    next(pieces)
    with pytest.raises(Overloaded):  # max_batch 1, max_queue 0: the only place is taken
        backend.stream(PROMPT, GREEDY)
    backend.interrupt()
    rest = list(pieces)
    assert first.interrupted and not first.truncated
    assert first.completion_tokens < 400, rest
    assert wait_for(lambda: backend.load == (0, 0), 10)


def test_without_vllm_the_engine_is_one_line_saying_what_to_do(tiny_model_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "learnloop.agent.cli", "serve", "--engine", "vllm"]
        + ["--model", str(tiny_model_dir), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install vllm" in lines[0], done.stderr
