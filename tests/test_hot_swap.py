"""Hot-swap under load: concurrent streaming chats, generated together in one batch, while
the active version switches back and forth. Every answer must complete, and must be the
answer of the version it names: the same text as that version's greedy answer alone.

Two LoRA adapters with random (non-zero) weights make the tiny model answer a fixed
prompt differently per version, so a greedy answer identifies the version that made it.
They adapt different layers, and the server keeps only two adapters loaded, so swaps
keep loading adapters (new modules too) while other answers are being generated.

The same test runs against ``--engine vllm`` (tests/vllm_kit.py: vLLM's stand-in here,
the real vLLM on a GPU machine).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.random_adapter import register_adapter, save_random_adapter
from learnloop.agent.config import ServingConfig
from tests.serving import Running, running_server
from tests.vllm_kit import use_vllm

PROMPT = {"role": "user", "content": "Name three colours."}
GREEDY = {"temperature": 0, "max_tokens": 6}


def stream_once(url: str) -> dict[str, Any]:
    body = {"model": "learnloop", "messages": [PROMPT], "stream": True, **GREEDY}
    text, versions, done = "", set(), False
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
        header = r.headers["X-Learnloop-Version"]
        turn_id = int(r.headers["X-Learnloop-Turn-Id"])
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            chunk = json.loads(line[6:])
            assert "version" in chunk, chunk
            versions.add(chunk["version"])
            text += chunk["choices"][0]["delta"].get("content") or ""
    return {
        "status": r.status_code,
        "version": header,
        "chunk_versions": versions,
        "text": text,
        "done": done,
        "turn_id": turn_id,
    }


def greedy_answer(server: Running, version: str) -> str:
    body = {"model": version, "messages": [PROMPT], **GREEDY}
    with server.client() as http:
        return str(
            http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
        )


@pytest.fixture(params=["transformers", "vllm"])
def serving(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ServingConfig:
    if request.param == "vllm":
        use_vllm(monkeypatch)
        return ServingConfig(engine="vllm", max_loras=1)
    return ServingConfig(engine="transformers")


def test_concurrent_streams_survive_swaps_and_name_the_version_used(
    tiny_model_dir: Path, tmp_path: Path, serving: ServingConfig
) -> None:
    targets = {"v1": ["q_proj", "v_proj"], "v2": ["k_proj", "o_proj", "up_proj"]}
    with running_server(tiny_model_dir, keep_adapters=1, serving=serving) as server:
        for n, version in enumerate(["v1", "v2"], start=1):
            folder = tmp_path / version
            save_random_adapter(tiny_model_dir, folder, seed=n, modules=targets[version], r=4)
            register_adapter(
                server.state.store, version, folder, tiny_model_dir.name, "test", "random adapter"
            )
        expected = {v: greedy_answer(server, v) for v in ("base", "v1", "v2")}
        assert len(set(expected.values())) == 3, expected  # each version is recognisable

        results: list[dict[str, Any]] = []
        failures: list[BaseException] = []
        swaps: list[float] = []
        stop = threading.Event()

        def client() -> None:
            try:
                for _ in range(4):
                    results.append(stream_once(server.url))
            except BaseException as exc:  # reported below
                failures.append(exc)

        def switcher() -> None:
            order = ["v1", "v2", "base"]
            n = 0
            with server.client() as http:
                while not stop.is_set():
                    response = http.post(f"/v1/versions/{order[n % 3]}/activate", json={})
                    if response.status_code != 200:
                        failures.append(AssertionError(response.text))
                        return
                    swaps.append(response.json()["seconds"])
                    n += 1
                    time.sleep(0.05)

        clients = [threading.Thread(target=client) for _ in range(8)]
        swapping = threading.Thread(target=switcher)
        swapping.start()
        for t in clients:
            t.start()
        for t in clients:
            t.join(timeout=300)
        stop.set()
        swapping.join(timeout=60)

        assert not failures, failures
        assert len(results) == 32 and len(swaps) >= 3
        assert {r["version"] for r in results} >= {"v1", "v2"}  # swaps happened under load
        for r in results:
            assert r["status"] == 200 and r["done"]
            assert r["chunk_versions"] == {r["version"]}
            assert r["text"] == expected[r["version"]], r
            assert server.state.store.get_turn(r["turn_id"]).log.version == r["version"]
