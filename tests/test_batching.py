"""Continuous batching (agent/batching.py) on the tiny model, with two random LoRA adapters
as versions: answers generated together are those each gets alone, with its own version
and settings; one alone is what ``model.generate`` gives; a cancelled answer leaves the
batch at once; a full queue refuses at once, and the server says so with a 503.

"Exactly" here: the same text, token for token, as the answer generated alone. Padding
adds exact zeros to attention, but a different batch shape may round matrix products
differently; the tiny model's greedy and seeded answers to these prompts have no near
ties, so they must not change.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.random_adapter import save_random_adapter
from learnloop.agent.backend import Pin
from learnloop.agent.batching import Overloaded, Stalled
from learnloop.agent.config import GenerationConfig, ServingConfig
from learnloop.agent.transformers_engine import TransformersBackend
from tests.serving import running_server

GREEDY = GenerationConfig(max_new_tokens=12, temperature=0, whole_answer=True)
SEEDED = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=7, whole_answer=True)
LONG = GenerationConfig(max_new_tokens=400, temperature=0, whole_answer=True)
PROMPTS = ["Name three colours.", "What is two plus two?", "Say hello to Ada."]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pin]:
    where = tmp_path_factory.mktemp("adapters")
    targets = {"v1": ["q_proj", "v_proj"], "v2": ["k_proj", "o_proj", "up_proj"]}
    for n, (version, modules) in enumerate(targets.items(), start=1):
        save_random_adapter(tiny_model_dir, where / version, seed=n, modules=modules, r=4)
    pins = {v: Pin(v, str(where / v)) for v in targets}
    return {"base": Pin("base"), **pins}


def backend(model: Path, **settings: Any) -> TransformersBackend:
    made = TransformersBackend(str(model), model.name, keep_adapters=4, **settings)
    made.ready_for_adapters()
    return made


def answer(b: TransformersBackend, prompt: str, config: GenerationConfig, pin: Pin) -> str:
    return "".join(b.stream([{"role": "user", "content": prompt}], config, pin))


def test_an_answer_alone_is_what_generate_gives(tiny_model_dir: Path) -> None:
    import torch

    b = TransformersBackend(str(tiny_model_dir), tiny_model_dir.name)
    messages = [{"role": "user", "content": PROMPTS[0]}]
    ids = b.tokenizer(b.render(messages), return_tensors="pt", add_special_tokens=False)
    for config in (GREEDY, SEEDED):
        torch.manual_seed(config.seed)
        sampling: dict[str, Any] = (
            {"do_sample": False}
            if config.greedy
            else {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p}
        )
        out = b.model.generate(
            **ids,
            max_new_tokens=config.max_new_tokens,
            repetition_penalty=config.repetition_penalty,
            pad_token_id=b.tokenizer.eos_token_id,
            **sampling,
        )
        expected = b.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        assert answer(b, PROMPTS[0], config, Pin("base")) == expected, config


def test_answers_generated_together_are_each_their_own_versions(
    tiny_model_dir: Path, adapters: dict[str, Pin]
) -> None:
    b = backend(tiny_model_dir)
    jobs = [
        (prompt, config, version)
        for prompt in PROMPTS
        for config in (GREEDY, SEEDED)
        for version in adapters
    ]
    alone = [answer(b, p, c, adapters[v]) for p, c, v in jobs]
    first = {v: a for (p, c, v), a in zip(jobs, alone, strict=True) if (p, c) == jobs[0][:2]}
    assert len(set(first.values())) == 3, first  # each version is recognisable

    together: list[str | None] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def ask(i: int) -> None:
        prompt, config, version = jobs[i]
        start.wait()
        together[i] = answer(b, prompt, config, adapters[version])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert b.batcher.peak > 1  # they did share the batch
    assert together == alone


def test_a_cancelled_answer_leaves_the_batch_at_once(tiny_model_dir: Path) -> None:
    b = backend(tiny_model_dir)
    stream = b.stream([{"role": "user", "content": PROMPTS[0]}], LONG, Pin("base"))
    pieces = iter(stream)
    next(pieces)
    pieces.close()  # what a client that disconnects does to its stream
    assert stream.interrupted and stream.completion_tokens < 40
    deadline = time.monotonic() + 5
    while b.load != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b.load == (0, 0)


def test_a_full_queue_refuses_at_once_and_the_rest_are_answered(tiny_model_dir: Path) -> None:
    b = backend(tiny_model_dir, max_batch=1, max_queue=1)
    messages = [{"role": "user", "content": PROMPTS[0]}]
    running = b.stream(messages, LONG, Pin("base"))
    pieces = iter(running)
    next(pieces)  # generating: the one place in the batch is taken
    waiting = b.stream(messages, GREEDY, Pin("base"))  # the one place in the queue
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        b.stream(messages, GREEDY, Pin("base"))
    assert time.monotonic() - started < 1 and refused.value.retry_after >= 1
    pieces.close()
    assert "".join(waiting) == answer(b, PROMPTS[0], GREEDY, Pin("base"))


def test_a_busy_server_answers_503_with_retry_after_and_stores_nothing(
    tiny_model_dir: Path,
) -> None:
    long = {"max_tokens": 900, "temperature": 0, "whole_answer": True, "stream": True}
    message = {"model": "learnloop", "messages": [{"role": "user", "content": PROMPTS[0]}]}
    one_place = ServingConfig(max_batch=1, max_queue=0)
    with running_server(tiny_model_dir, serving=one_place) as server, server.client() as http:
        with http.stream("POST", "/v1/chat/completions", json={**message, **long}) as first:
            lines = first.iter_lines()
            while server.state.agent.backend.load != (1, 0):
                next(lines)  # until it generates: the one place is taken
            before = server.counts()
            busy = http.post("/v1/chat/completions", json=message)
            assert busy.status_code == 503, busy.text
            assert int(busy.headers["Retry-After"]) >= 1
            assert "busy" in busy.json()["error"]["message"]
            assert server.counts() == before
        # the first one's client went away: its place is freed, well before its 900 tokens
        deadline = time.monotonic() + 10
        while server.counts()[0] == before[0] and time.monotonic() < deadline:
            time.sleep(0.05)  # until the cut answer is logged
        assert server.state.agent.backend.load == (0, 0)
        assert server.state.store.get_turn(before[0] + 1).log.completion_tokens < 900
        later = http.post("/v1/chat/completions", json=message)
        assert later.status_code == 200, later.text


def test_an_answer_whose_tokens_stop_coming_fails_with_one_clear_error(
    tiny_model_dir: Path,
) -> None:
    b = backend(tiny_model_dir)
    b.stall_seconds = 1e-4  # no forward pass is that quick: the first token is "late"
    with pytest.raises(Stalled, match="no token for 0.0001 s.*try again"):
        answer(b, PROMPTS[0], LONG, Pin("base"))
    deadline = time.monotonic() + 5
    while b.load != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b.load == (0, 0)  # the dropped answer left the batch
    b.stall_seconds = 120.0
    assert answer(b, PROMPTS[0], GREEDY, Pin("base"))  # and the backend answers again
