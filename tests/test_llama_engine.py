"""The llama.cpp engine (agent/llama_engine.py) on the real SmolLM2-135M GGUF, with two
random LoRA adapters as versions (converted to GGUF LoRAs on first load).

- It answers as the transformers engine does: greedy and seeded answers of the base and of
  each version are the same text, token for token (F16 weights; the gate measures with
  transformers, so this is what makes its verdict hold for what is served).
- Answers generated together, for different versions, are each what it is alone.
- A swap loads the new version (its adapter and context) while an answer runs, which
  goes on with its own version.
- An answer that does not fit in its context's cache yet waits for one that ends.
- A server started with ``--engine llama.cpp`` serves concurrent streams through swaps.

"Exactly": llama.cpp's matrix products take other paths for another batch shape, so a
near tie between two tokens could fall either way; these prompts and lengths have none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.random_adapter import register_adapter, save_random_adapter
from learnloop.agent.backend import BatchedBackend, Pin
from learnloop.agent.config import GenerationConfig, ServingConfig
from learnloop.agent.llama_engine import LlamaBackend
from learnloop.agent.transformers_engine import TransformersBackend
from learnloop.learning.adapters import AdapterDamaged
from learnloop.learning.models import ResolvedModel, resolve_model
from tests.serving import running_server

GREEDY = GenerationConfig(max_new_tokens=20, temperature=0, whole_answer=True)
SEEDED = GenerationConfig(max_new_tokens=20, temperature=0.8, seed=11, whole_answer=True)
PROMPTS = ["What is the capital of France?", "Name a fruit that is yellow."]
TARGETS = {"v1": ["q_proj", "v_proj", "up_proj"], "v2": ["k_proj", "o_proj", "down_proj"]}


@pytest.fixture(scope="module")
def model(machine_cache: Path) -> Iterator[ResolvedModel]:
    with pytest.MonkeyPatch.context() as patch:  # the module's fixtures use the test cache
        patch.setenv("LEARNLOOP_CACHE", str(machine_cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield resolve_model(None, progress=False)


@pytest.fixture(scope="module")
def pins(model: ResolvedModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pin]:
    where = tmp_path_factory.mktemp("llama-adapters")
    for n, (version, modules) in enumerate(TARGETS.items(), start=1):
        save_random_adapter(model.path, where / version, seed=n, modules=modules, r=16)
    return {"base": Pin("base"), **{v: Pin(v, str(where / v)) for v in TARGETS}}


@pytest.fixture(scope="module")
def llama_backend(model: ResolvedModel, machine_cache: Path) -> Iterator[LlamaBackend]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEARNLOOP_CACHE", str(machine_cache))
        yield LlamaBackend(model, keep_adapters=4)


def answer(backend: BatchedBackend, prompt: str, config: GenerationConfig, pin: Pin) -> str:
    return "".join(backend.stream([{"role": "user", "content": prompt}], config, pin))


def jobs(pins: dict[str, Pin]) -> list[tuple[str, GenerationConfig, str]]:
    return [(p, c, v) for p in PROMPTS for c in (GREEDY, SEEDED) for v in pins]


def test_it_answers_as_the_transformers_engine_does(
    model: ResolvedModel, pins: dict[str, Pin], llama_backend: LlamaBackend
) -> None:
    torch_backend = TransformersBackend(model.path, model.name, keep_adapters=4)
    torch_backend.ready_for_adapters()
    work = jobs(pins)
    served = [answer(llama_backend, p, c, pins[v]) for p, c, v in work]
    measured = [answer(torch_backend, p, c, pins[v]) for p, c, v in work]
    assert served == measured
    by_version = {
        v: tuple(a for (_, _, w), a in zip(work, served, strict=True) if w == v) for v in pins
    }
    assert len(set(by_version.values())) == 3, by_version  # each version answers its own way


def test_answers_for_different_versions_together_are_each_what_it_is_alone(
    pins: dict[str, Pin], llama_backend: LlamaBackend
) -> None:
    work = jobs(pins)
    alone = [answer(llama_backend, p, c, pins[v]) for p, c, v in work]
    together: list[str | None] = [None] * len(work)
    start = threading.Barrier(len(work))

    def ask(i: int) -> None:
        prompt, config, version = work[i]
        start.wait()
        together[i] = answer(llama_backend, prompt, config, pins[version])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert llama_backend.batcher.peak > 1
    assert together == alone


def test_a_swap_loads_beside_a_running_answer(
    model: ResolvedModel, pins: dict[str, Pin], tmp_path: Path
) -> None:
    backend = LlamaBackend(model, keep_adapters=1)
    long = GenerationConfig(max_new_tokens=60, temperature=0, whole_answer=True)
    expected = answer(backend, PROMPTS[0], long, pins["base"])
    stream = backend.stream([{"role": "user", "content": PROMPTS[0]}], long)
    pieces = iter(stream)
    first = next(pieces)
    seconds = backend.switch("v2", pins["v2"].adapter_path)
    assert backend.version == "v2" and seconds < 5
    assert first + "".join(pieces) == expected and stream.version == "base"
    assert answer(backend, PROMPTS[1], GREEDY, Pin("v2")) == answer(
        backend, PROMPTS[1], GREEDY, pins["v2"]
    )


def test_an_answer_that_does_not_fit_yet_waits_for_room(
    model: ResolvedModel, pins: dict[str, Pin]
) -> None:
    backend = LlamaBackend(model, cells=64)  # one prompt and its 20 tokens at a time
    alone = answer(backend, PROMPTS[0], GREEDY, pins["base"])
    results: list[str] = []

    def ask() -> None:
        results.append(answer(backend, PROMPTS[0], GREEDY, pins["base"]))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [alone] * 3 and backend.batcher.peak == 1


def test_an_adapter_llama_cpp_cannot_run_is_refused_with_the_reason(
    model: ResolvedModel, tmp_path: Path
) -> None:
    save_random_adapter(model.path, tmp_path / "head", seed=1, modules=["q_proj", "lm_head"], r=4)
    backend = LlamaBackend(model)
    with pytest.raises(AdapterDamaged, match="lm_head"):
        backend.switch("v9", str(tmp_path / "head"))
    assert backend.version == "base"
    assert answer(backend, PROMPTS[0], GREEDY, Pin("base"))  # it still answers


def test_a_llama_cpp_server_serves_concurrent_streams_through_swaps(
    model: ResolvedModel, pins: dict[str, Pin]
) -> None:
    import httpx

    engine = ServingConfig(engine="llama.cpp")
    with running_server(Path("default"), keep_adapters=1, serving=engine) as server:
        assert server.state.agent.backend.engine == "llama.cpp f16"
        for version in TARGETS:
            folder = Path(str(pins[version].adapter_path))
            register_adapter(server.state.store, version, folder, model.name, "test", "random")
        body: dict[str, Any] = {"messages": [{"role": "user", "content": PROMPTS[1]}]}
        body |= {"temperature": 0, "max_tokens": 12, "whole_answer": True}
        with server.client() as http:
            expected = {
                v: http.post("/v1/chat/completions", json={**body, "model": v}).json()
                for v in ("base", *TARGETS)
            }
        texts = {v: r["choices"][0]["message"]["content"] for v, r in expected.items()}
        results: list[tuple[str, str]] = []
        swaps: list[int] = []
        stop = threading.Event()

        def client() -> None:
            for _ in range(5):
                with httpx.Client(base_url=server.url, timeout=120) as http:
                    r = http.post("/v1/chat/completions", json={**body, "model": "learnloop"})
                    results.append(
                        (r.json()["version"], r.json()["choices"][0]["message"]["content"])
                    )

        def switcher() -> None:
            n = 0
            with server.client() as http:
                while not stop.is_set():
                    r = http.post(f"/v1/versions/{('v1', 'v2', 'base')[n % 3]}/activate", json={})
                    swaps.append(r.status_code)
                    n += 1
                    time.sleep(0.05)

        clients = [threading.Thread(target=client) for _ in range(4)]
        swapping = threading.Thread(target=switcher)
        swapping.start()
        for t in clients:
            t.start()
        for t in clients:
            t.join(timeout=300)
        stop.set()
        swapping.join(timeout=60)
        assert len(results) == 20 and len(swaps) >= 3 and set(swaps) == {200}
        assert len({version for version, _ in results}) >= 2  # swaps happened under load
        assert all(text == texts[version] for version, text in results), (results, texts)
