"""The HTTP server end to end: the official ``openai`` client against the chat API, the
feedback and learning endpoints, versions, threads, and the error answers.

Each test runs a real uvicorn server over the tiny model and the test's data root.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import NotFoundError, OpenAI

from tests.serving import Running, running_server

FAST_LEARN = {"max_steps": 3, "sft_learning_rate": 1e-2, "gate": False}


@pytest.fixture
def server(tiny_model_dir: Path) -> Iterator[Running]:
    with running_server(tiny_model_dir) as running:
        yield running


def openai_client(server: Running) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused-on-loopback", max_retries=0)


def wait_for_run(http: httpx.Client, run: int, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = http.get(f"/v1/learn/{run}").json()
        if view["status"] != "running":
            return view
        time.sleep(0.2)
    raise AssertionError(f"run {run} still running after {timeout} s")


class TestTheOpenAIClientUnchanged:
    def test_a_completion_names_its_turn_and_version_in_body_and_headers(
        self, server: Running
    ) -> None:
        raw = openai_client(server).chat.completions.with_raw_response.create(
            model="learnloop", messages=[{"role": "user", "content": "Hello there"}]
        )
        completion = raw.parse()
        turn_id = int(raw.headers["X-Learnloop-Turn-Id"])
        assert raw.headers["X-Learnloop-Version"] == "base"
        assert completion.model_extra is not None
        assert completion.model_extra["turn_id"] == turn_id
        assert completion.model_extra["version"] == "base"
        assert completion.choices[0].finish_reason == "length"  # the tiny model never ends
        assert completion.usage is not None and completion.usage.completion_tokens == 8
        logged = server.state.store.get_turn(turn_id).log
        assert logged.answer == completion.choices[0].message.content
        assert logged.version == "base"

    def test_a_streamed_completion_arrives_in_chunks_that_name_the_turn(
        self, server: Running
    ) -> None:
        stream = openai_client(server).chat.completions.create(
            model="learnloop",
            messages=[{"role": "user", "content": "Tell me a story"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        turn_ids = {(c.model_extra or {})["turn_id"] for c in chunks}
        assert len(turn_ids) == 1
        turn_id = turn_ids.pop()
        assert server.state.store.get_turn(turn_id).log.answer == text
        assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
        assert chunks[-1].choices[0].finish_reason == "length"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8

    def test_the_conversation_sent_is_what_the_model_saw(self, server: Running) -> None:
        messages: Any = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Hello Ada."},
            {"role": "user", "content": "What is my name?"},
        ]
        raw = openai_client(server).chat.completions.with_raw_response.create(
            model="learnloop", messages=messages
        )
        turn = server.state.store.get_turn(int(raw.headers["X-Learnloop-Turn-Id"]))
        assert turn.log.messages == messages

    def test_an_unknown_model_is_a_404_from_the_client(self, server: Running) -> None:
        with pytest.raises(NotFoundError, match="no model 'v9'"):
            openai_client(server).chat.completions.create(
                model="v9", messages=[{"role": "user", "content": "hi"}]
            )

    def test_models_lists_the_alias_and_the_base(self, server: Running) -> None:
        ids = [m.id for m in openai_client(server).models.list()]
        assert ids == ["learnloop", "base"]


class TestThreads:
    def test_a_thread_continues_and_is_listed_with_its_turns(self, server: Running) -> None:
        with server.client() as http:
            first = http.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "My name is Ada."}]},
            ).json()
            second = http.post(
                "/v1/chat/completions",
                json={
                    "thread_id": first["thread_id"],
                    "messages": [{"role": "user", "content": "What is my name?"}],
                },
            ).json()
            thread = http.get(f"/v1/threads/{first['thread_id']}").json()
            listed = http.get("/v1/threads").json()
        assert [t["turn_id"] for t in thread["turns"]] == [first["turn_id"], second["turn_id"]]
        seen = server.state.store.get_turn(second["turn_id"]).log.messages
        assert seen[-3:] == [
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
            {"role": "user", "content": "What is my name?"},
        ]
        assert listed[0]["id"] == first["thread_id"] and listed[0]["turns"] == 2
        assert listed[0]["title"] == "My name is Ada."

    def test_a_regeneration_replaces_the_turn_in_the_thread(self, server: Running) -> None:
        with server.client() as http:
            first = http.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]}
            ).json()
            again = http.post(
                "/v1/chat/completions", json={"regen_of": first["turn_id"], "messages": []}
            ).json()
            thread = http.get(f"/v1/threads/{first['thread_id']}").json()
            listed = http.get("/v1/threads").json()
        assert listed[0]["turns"] == 1
        assert again["thread_id"] == first["thread_id"]
        assert [t["turn_id"] for t in thread["turns"]] == [again["turn_id"]]
        assert thread["turns"][0]["regen_of"] == first["turn_id"]


class TestFeedbackAndLearning:
    def test_feedback_then_learning_makes_the_next_answer_come_from_v1(
        self, server: Running
    ) -> None:
        with server.client() as http:
            answer = http.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Capital of France?"}]},
            ).json()
            given = http.post(
                "/v1/feedback",
                json={"turn_id": answer["turn_id"], "rating": "down", "correction": "Paris."},
            )
            assert given.status_code == 201
            started = http.post("/v1/learn", json=FAST_LEARN)
            assert started.status_code == 202
            run = started.json()["run"]
            again = http.post("/v1/learn", json=FAST_LEARN)
            done = wait_for_run(http, run)
            after = http.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Capital of France?"}]},
            )
            versions = http.get("/v1/versions").json()
        assert again.status_code == 409 and f"run {run}" in again.json()["error"]["message"]
        assert done["status"] == "succeeded" and done["version"] == "v1"
        assert done["stage"] == "done" and done["losses"]
        assert after.headers["X-Learnloop-Version"] == "v1"
        assert after.json()["version"] == "v1"
        assert [v["id"] for v in versions if v["active"]] == ["v1"]
        assert server.state.store.feedback_examples()[0].correction == "Paris."

    def test_a_start_both_cycle_trains_twice_and_the_kept_version_serves(
        self, server: Running
    ) -> None:
        with server.client() as http:
            for question, fix in [("Capital of France?", "Paris."), ("2+2?", "4")]:
                answer = http.post(
                    "/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": question}]},
                ).json()
                http.post(
                    "/v1/feedback",
                    json={"turn_id": answer["turn_id"], "rating": "down", "correction": fix},
                )
                both = {**FAST_LEARN, "start": "both", "replay": 0}
                done = wait_for_run(http, http.post("/v1/learn", json=both).json()["run"])
            after = http.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "2+2?"}]}
            )
        # the first cycle had only the base to start from: one fresh run, v1
        assert done["version"] == "v2" and done["status"] == "succeeded"
        assert done["then"]["version"] == "v3" and done["then"]["promoted"]
        assert after.headers["X-Learnloop-Version"] == "v3"

    def test_learning_with_nothing_to_learn_is_422_and_records_no_run(
        self, server: Running
    ) -> None:
        with server.client() as http:
            refused = http.post("/v1/learn", json={})
        assert refused.status_code == 422
        assert "no feedback yet" in refused.json()["error"]["message"]
        assert server.state.store.runs() == []

    def test_activate_and_rollback_switch_what_answers(self, server: Running) -> None:
        with server.client() as http:
            answer = http.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "2+2?"}]}
            ).json()
            http.post(
                "/v1/feedback",
                json={"turn_id": answer["turn_id"], "rating": "down", "correction": "4"},
            )
            wait_for_run(http, http.post("/v1/learn", json=FAST_LEARN).json()["run"])
            back = http.post("/v1/rollback", json={"why": "testing"}).json()
            on_base = http.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "2+2?"}]}
            )
            forward = http.post("/v1/versions/v1/activate", json={}).json()
            history = server.state.store.activations()
        assert (back["previous"], back["active"]) == ("v1", "base")
        assert on_base.headers["X-Learnloop-Version"] == "base"
        assert forward["active"] == "v1"
        assert [(a.version_id, a.why) for a in history][-2:] == [
            ("base", "testing"),
            ("v1", "activated through the API"),
        ]


USER = {"role": "user", "content": "Hello"}


class TestBadRequestsAre4xxAndChangeNothing:
    @pytest.mark.parametrize(
        ("method", "path", "body", "status"),
        [
            ("POST", "/v1/chat/completions", b"{not json", 422),
            ("POST", "/v1/chat/completions", {"messages": []}, 400),
            ("POST", "/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, 400),
            (
                "POST",
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": "x"}], "thread_id": "nope"},
                404,
            ),
            ("POST", "/v1/chat/completions", {"messages": [], "regen_of": 999}, 404),
            ("POST", "/v1/feedback", {"turn_id": 999, "rating": "up"}, 404),
            ("POST", "/v1/feedback", {"turn_id": 1, "rating": "meh"}, 422),
            ("POST", "/v1/feedback", {"turn_id": 1, "rating": "up", "correction": "x"}, 400),
            ("POST", "/v1/chat/completions", {"messages": [USER], "n": 2}, 422),
            ("POST", "/v1/chat/completions", {"messages": [USER], "stop": ["a"] * 5}, 422),
            ("POST", "/v1/learn", {"lora_r": "big"}, 422),
            ("POST", "/v1/learn", {"no_such_setting": 1}, 400),
            ("GET", "/v1/learn/42", None, 404),
            ("POST", "/v1/versions/v7/activate", None, 404),
            ("POST", "/v1/rollback", None, 400),
            ("GET", "/v1/threads/nope", None, 404),
            ("GET", "/v1/feedback", None, 405),
            ("DELETE", "/v1/versions", None, 405),
        ],
    )
    def test_each_gets_a_clear_error(
        self, server: Running, method: str, path: str, body: Any, status: int
    ) -> None:
        content = body if isinstance(body, bytes) else None
        payload = None if isinstance(body, bytes) else body
        with server.client() as http:
            response = http.request(
                method,
                path,
                json=payload,
                content=content,
                headers={"Content-Type": "application/json"},
            )
        assert response.status_code == status, response.text
        message = response.json()["error"]["message"]
        assert message and "Traceback" not in message
        status_now = server.state.store.status()
        assert (status_now.turns, status_now.feedback) == (0, 0)
        assert server.state.store.runs() == []


def test_the_openapi_document_describes_every_endpoint(server: Running) -> None:
    with server.client() as http:
        doc = http.get("/openapi.json").json()
    assert {
        "/v1/chat/completions",
        "/v1/models",
        "/v1/feedback",
        "/v1/learn",
        "/v1/learn/{run}",
        "/v1/versions",
        "/v1/versions/{version}/activate",
        "/v1/rollback",
        "/v1/threads/{thread_id}",
        "/healthz",
    } <= set(doc["paths"])
    json.dumps(doc)  # serialisable as served


def test_a_vanishing_temperature_answers_greedily(server: Running) -> None:
    """Found by schemathesis: temperature 1e-54 divided the logits into infinities and
    the sampler failed (a 500). Below 1e-3 the answer is the greedy one."""
    ask = {"messages": [USER], "max_tokens": 6}
    with server.client() as http:
        tiny = http.post("/v1/chat/completions", json={**ask, "temperature": 1e-54})
        greedy = http.post("/v1/chat/completions", json={**ask, "temperature": 0})
    assert tiny.status_code == 200, tiny.text
    content = [r.json()["choices"][0]["message"]["content"] for r in (tiny, greedy)]
    assert content[0] == content[1]
