"""Tools through the OpenAI-compatible API (agent/server/chat.py), end to end: a real server
whose model is scripted (tests/scripted.py, over the real tokenizer and chat format), so
that it makes the calls each test needs, driven by the official ``openai`` client and by
LangChain's ``ChatOpenAI(...).bind_tools(...)``, streaming and not.

A client's own tools come back as calls for it to run; the operator's (``serve --tools``)
run on the server, and the stream says so in ``learnloop_step`` chunks that OpenAI
clients skip. Every bad request is a 400 naming the problem, and stores nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import (
    HumanMessage,
    ToolMessage,
)
from openai import BadRequestError

from learnloop.learning.toolbox import load_tools
from tests.helpers import refused
from tests.scripted import SHARED_TOOLS, ScriptedBackend, call
from tests.serving import Running
from tests.tool_clients import (
    ASK_WEATHER,
    CLIENTS,
    CLOCK,
    REQUIRED_PREFIX,
    STREAM,
    WEATHER,
    has_shared_tools,
    langchain_message,
    openai_client,
    openai_reply,
    reply_from,
    scripted_server,
    stored,
    weather,
)

# -- a client's own tools ---------------------------------------------------------------


class TestClientTools:
    @STREAM
    def test_the_openai_client_gets_the_call_and_its_result_gives_the_answer(
        self, tiny_model_dir: Path, smol_tokenizer_dir: Path, stream: bool
    ) -> None:
        script = [call("weather", city="Oslo"), "It is sunny in Oslo."]
        with scripted_server(tiny_model_dir, smol_tokenizer_dir, script) as (server, backend):
            asked = openai_reply(server, stream, messages=ASK_WEATHER, tools=[WEATHER])
            assert asked.finish_reason == "tool_calls"
            assert asked.names == ["weather"] and asked.arguments == [{"city": "Oslo"}]
            assert not asked.content  # null (whole) or nothing streamed: it only called
            assert "<tools>" in backend.prompts[0] and '"weather"' in backend.prompts[0]

            called: dict[str, Any] = {"role": "assistant", "content": None}
            called["tool_calls"] = asked.tool_calls
            result = {"role": "tool", "tool_call_id": asked.tool_calls[0]["id"], "content": "21 C"}
            conversation = [*ASK_WEATHER, called, result]
            answered = openai_reply(server, stream, messages=conversation, tools=[WEATHER])
            assert answered.content == "It is sunny in Oslo."
            assert answered.finish_reason == "stop" and answered.tool_calls == []
            assert "<tool_response>\n21 C\n</tool_response>" in backend.prompts[1]
            assert not backend.prompts[1].endswith("Weather in Oslo?<|im_end|>\n")

            with server.client() as http:
                thread = http.get(f"/v1/threads/{asked.extra['thread_id']}").json()
            (turn,) = thread["turns"]
            assert turn["user_message"] == "Weather in Oslo?" and turn["answer"] == ""
            assert turn["steps"][0]["tool_calls"] == asked.tool_calls
            logged = server.state.store.get_turn(answered.extra["turn_id"]).log
            assert logged.messages[-2:] == [called, result]  # went on from the result
            assert logged.user_message == "Weather in Oslo?" and logged.answer == answered.content

    @STREAM
    def test_langchain_bind_tools_gets_the_call_and_its_result_gives_the_answer(
        self, tiny_model_dir: Path, smol_tokenizer_dir: Path, stream: bool
    ) -> None:
        script = [call("weather", city="Oslo"), "It is sunny in Oslo."]
        with scripted_server(tiny_model_dir, smol_tokenizer_dir, script) as (server, backend):
            question = HumanMessage("Weather in Oslo?")
            asked = langchain_message(server, stream, [question], [weather])
            assert [(c["name"], c["args"]) for c in asked.tool_calls] == [
                ("weather", {"city": "Oslo"})
            ]
            assert asked.response_metadata.get("finish_reason") == "tool_calls"
            ran = ToolMessage(weather("Oslo"), tool_call_id=asked.tool_calls[0]["id"])
            answered = langchain_message(server, stream, [question, asked, ran], [weather])
            assert answered.content == "It is sunny in Oslo." and not answered.tool_calls
            assert "<tool_response>\nsunny in Oslo\n</tool_response>" in backend.prompts[1]

    @CLIENTS
    def test_a_model_that_answers_without_calling_gives_text(
        self, tiny_model_dir: Path, smol_tokenizer_dir: Path, kind: str, stream: bool
    ) -> None:
        with scripted_server(tiny_model_dir, smol_tokenizer_dir, ["I cannot tell."]) as (
            server,
            _,
        ):
            reply = reply_from(kind, server, stream, messages=ASK_WEATHER, tools=[WEATHER])
        assert reply.content == "I cannot tell." and reply.tool_calls == []
        assert reply.finish_reason == "stop"


# -- tool_choice ------------------------------------------------------------------------


class TestToolChoice:
    @CLIENTS
    def test_none_offers_no_tools_and_the_answer_is_text(
        self, tiny_model_dir: Path, smol_tokenizer_dir: Path, kind: str, stream: bool
    ) -> None:
        with scripted_server(tiny_model_dir, smol_tokenizer_dir, ["No tools today."]) as (
            server,
            backend,
        ):
            reply = reply_from(
                kind, server, stream, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="none"
            )
        assert reply.content == "No tools today." and reply.finish_reason == "stop"
        assert "<tools>" not in backend.prompts[0]

    @CLIENTS
    def test_required_makes_the_answer_begin_a_call(
        self, tiny_model_dir: Path, smol_tokenizer_dir: Path, kind: str, stream: bool
    ) -> None:
        rest = 'weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
        with scripted_server(tiny_model_dir, smol_tokenizer_dir, [rest]) as (server, backend):
            reply = reply_from(
                kind,
                server,
                stream,
                messages=ASK_WEATHER,
                tools=[WEATHER, CLOCK],
                tool_choice="required",
            )
        assert backend.prompts[0].endswith(REQUIRED_PREFIX)
        assert reply.names == ["weather"] and reply.arguments == [{"city": "Oslo"}]
        assert reply.finish_reason == "tool_calls"

    @CLIENTS
    def test_a_named_function_begins_a_call_of_it(
        self, tiny_model_dir: Path, smol_tokenizer_dir: Path, kind: str, stream: bool
    ) -> None:
        # LangChain names it as a string; bind_tools sends OpenAI's {"type": "function", ...}
        choice: Any = {"type": "function", "function": {"name": "clock"}}
        if kind == "langchain":
            choice = "clock"
        with scripted_server(tiny_model_dir, smol_tokenizer_dir, ["{}}\n</tool_call>"]) as (
            server,
            backend,
        ):
            reply = reply_from(
                kind,
                server,
                stream,
                messages=ASK_WEATHER,
                tools=[WEATHER, CLOCK],
                tool_choice=choice,
            )
        assert backend.prompts[0].endswith('<tool_call>\n{"name": "clock", "arguments": ')
        assert reply.names == ["clock"] and reply.arguments == [{}]
        assert reply.finish_reason == "tool_calls"


# -- the operator's tools ---------------------------------------------------------------

MULTIPLY = [call("calculate", expression="2824 * 82"), "There are 231568 items."]
ASK_ITEMS = [{"role": "user", "content": "2824 boxes of 82 items: how many items?"}]


@contextmanager
def operator_server(
    model_dir: Path, tokenizer_dir: Path
) -> Iterator[tuple[Running, ScriptedBackend]]:
    """``learnloop serve --tools SHARED_TOOLS`` with a model that calls calculate once."""
    toolbox = load_tools([str(SHARED_TOOLS)])
    with scripted_server(model_dir, tokenizer_dir, list(MULTIPLY), toolbox) as running:
        yield running


@has_shared_tools
class TestOperatorTools:
    @CLIENTS
    def test_the_server_runs_its_tool_and_the_client_gets_the_answer(
        self, tiny_model_dir: Path, smol_tokenizer_dir: Path, kind: str, stream: bool
    ) -> None:
        with operator_server(tiny_model_dir, smol_tokenizer_dir) as (server, backend):
            reply = reply_from(kind, server, stream, messages=ASK_ITEMS)
        assert reply.content == "There are 231568 items."
        assert reply.tool_calls == [] and reply.finish_reason == "stop"
        assert '"calculate"' in backend.prompts[0]
        assert "<tool_response>\n231568\n</tool_response>" in backend.prompts[1]

    @STREAM
    def test_the_answer_names_its_steps_and_a_stream_shows_them_as_they_happen(
        self, tiny_model_dir: Path, smol_tokenizer_dir: Path, stream: bool
    ) -> None:
        with operator_server(tiny_model_dir, smol_tokenizer_dir) as (server, _):
            reply = openai_reply(server, stream, messages=ASK_ITEMS)
            with server.client() as http:
                thread = http.get(f"/v1/threads/{reply.extra['thread_id']}").json()
        steps = reply.extra["learnloop_steps"]
        assert [s["type"] for s in steps] == ["model", "tool", "model"]
        assert steps[0]["tool_calls"][0]["function"]["name"] == "calculate"
        assert steps[1]["content"] == "231568" and steps[1]["error"] is None
        assert "prompt" not in steps[0]  # step_view: what was said and done
        assert thread["turns"][0]["steps"] == steps  # stored with its steps
        if stream:
            (made,), (result,) = [[s] for s in reply.steps]  # one call, one result
            assert made["tool_call"] == steps[0]["tool_calls"][0]
            assert result["tool_result"] == steps[1]

    def test_step_chunks_come_before_the_answers_text_and_keep_the_chunk_shape(
        self, tiny_model_dir: Path, smol_tokenizer_dir: Path
    ) -> None:
        body = {"messages": ASK_ITEMS, "stream": True}
        with (
            operator_server(tiny_model_dir, smol_tokenizer_dir) as (server, _),
            server.client() as http,
            http.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            events = [
                json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")
            ]
        kinds = []
        for event in events:
            assert event["object"] == "chat.completion.chunk"
            delta = event["choices"][0]["delta"]
            if "learnloop_step" in event:
                assert delta == {}
                kinds.append(next(iter(event["learnloop_step"])))
            elif delta.get("content"):
                kinds.append("text")
        assert kinds[:2] == ["tool_call", "tool_result"] and set(kinds[2:]) == {"text"}
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
        assert text == "There are 231568 items."

    def test_a_clients_own_tools_replace_the_servers(
        self, tiny_model_dir: Path, smol_tokenizer_dir: Path
    ) -> None:
        toolbox = load_tools([str(SHARED_TOOLS)])
        script = [call("calculate", expression="1 + 1")]
        with scripted_server(tiny_model_dir, smol_tokenizer_dir, script, toolbox) as (
            server,
            backend,
        ):
            mine = {"type": "function", "function": {"name": "calculate"}}
            reply = openai_reply(server, False, messages=ASK_ITEMS, tools=[mine])
        assert reply.finish_reason == "tool_calls" and len(backend.prompts) == 1  # not run
        assert '"expression"' not in backend.prompts[0]  # the client's schema, not the server's


# -- bad input --------------------------------------------------------------------------


def called(arguments: str = "{}") -> dict[str, Any]:
    """An assistant message that called weather as ``call_1``."""
    fn = {"name": "weather", "arguments": arguments}
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": fn}],
    }


CALLED = called()
BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "a tool that is no function": (
        {"tools": [{"type": "code_interpreter"}]},
        ["tools[0] is not a function"],
    ),
    "a function without a name": (
        {"tools": [{"type": "function", "function": {"description": "x"}}]},
        ["tools[0]", "name None"],
    ),
    "a name with a space": (
        {"tools": [{"type": "function", "function": {"name": "get weather"}}]},
        ["'get weather'", "letters, digits, _ or -"],
    ),
    "two tools of one name": (
        {"tools": [WEATHER, WEATHER]},
        ["tools[1]", "two tools are named 'weather'"],
    ),
    "parameters that are no object schema": (
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
            ]
        },
        ["parameters of f", "JSON Schema object"],
    ),
    "tool_choice naming an unknown function": (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        ["tool_choice names 'nope'", "weather"],
    ),
    "tool_choice required without tools": (
        {"tool_choice": "required"},
        ['tool_choice "required" needs tools'],
    ),
    "a tool_choice that is none of the four": (
        {"tools": [WEATHER], "tool_choice": "always"},
        ['tool_choice is "auto", "none", "required"'],
    ),
    "a tool result for no call": (
        {"messages": [*ASK_WEATHER, CALLED, {"role": "tool", "tool_call_id": "x", "content": "1"}]},
        ["messages[2] (tool)", "'x'", "no earlier assistant message made"],
    ),
    "a tool result before its call": (
        {"messages": [{"role": "tool", "tool_call_id": "call_1", "content": "1"}, *ASK_WEATHER]},
        ["messages[0] (tool)", "'call_1'"],
    ),
    "a tool result without a call id": (
        {"messages": [*ASK_WEATHER, CALLED, {"role": "tool", "content": "1"}]},
        ["messages[2] (tool)", "None"],
    ),
    "an assistant message with neither content nor calls": (
        {"messages": [*ASK_WEATHER, {"role": "assistant", "content": None}, *ASK_WEATHER]},
        ["messages[1] (assistant) has neither content nor tool_calls"],
    ),
    "a call whose arguments are no JSON object": (
        {
            "messages": [
                *ASK_WEATHER,
                called("[1"),
                {"role": "tool", "tool_call_id": "call_1", "content": "1"},
            ]
        },
        ["messages[1] (assistant)", "arguments of its call of 'weather'"],
    ),
    "tool results sent to a thread": (
        {
            "thread_id": "abc",
            "messages": [{"role": "tool", "tool_call_id": "call_1", "content": "1"}],
        },
        ["thread_id continues a thread with a new user message"],
    ),
    "a conversation that ends with the assistant": (
        {"messages": [*ASK_WEATHER, CALLED]},
        ["must end with the user's message or with tool results"],
    ),
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_every_bad_tool_request_is_a_400_naming_it_and_stores_nothing(
    tiny_model_dir: Path, smol_tokenizer_dir: Path, stream: bool
) -> None:
    with scripted_server(tiny_model_dir, smol_tokenizer_dir, []) as (server, backend):
        before = stored(server)
        with server.client() as http:
            for name, (change, words) in BAD.items():
                body = {"messages": ASK_WEATHER, "stream": stream, **change}
                response = http.post("/v1/chat/completions", json=body)
                try:
                    refused(response, 400, "invalid_request_error", *words)
                except AssertionError as failed:
                    raise AssertionError(f"{name}: {failed}") from None
        assert stored(server) == before and backend.prompts == []  # nothing ran or was kept


def test_the_openai_client_raises_the_400_with_its_message(
    tiny_model_dir: Path, smol_tokenizer_dir: Path
) -> None:
    with scripted_server(tiny_model_dir, smol_tokenizer_dir, []) as (server, _):
        with pytest.raises(BadRequestError, match="tool_choice names 'nope'"):
            openai_client(server).chat.completions.create(  # type: ignore[call-overload]
                model="learnloop",
                messages=ASK_WEATHER,
                tools=[WEATHER],
                tool_choice={"type": "function", "function": {"name": "nope"}},
            )
        assert stored(server) == (0, 0)


def test_the_prompt_bound_counts_the_tools(tiny_model_dir: Path, smol_tokenizer_dir: Path) -> None:
    wordy = {"type": "function", "function": {"name": "wordy", "description": "word " * 400}}
    with scripted_server(tiny_model_dir, smol_tokenizer_dir, ["Hi."], max_prompt_tokens=200) as (
        server,
        _,
    ):
        with server.client() as http:
            too_long = http.post(
                "/v1/chat/completions", json={"messages": ASK_WEATHER, "tools": [wordy]}
            )
            refused(too_long, 400, "invalid_request_error", "--max-prompt-tokens` (200)")
            assert stored(server) == (0, 0)
            plain = http.post("/v1/chat/completions", json={"messages": ASK_WEATHER})
        assert (
            plain.status_code == 200 and plain.json()["choices"][0]["message"]["content"] == "Hi."
        )


def test_a_thread_continues_after_a_client_tool_turn(
    tiny_model_dir: Path, smol_tokenizer_dir: Path
) -> None:
    script = [call("weather", city="Oslo"), "You asked about Oslo."]
    with scripted_server(tiny_model_dir, smol_tokenizer_dir, script) as (server, backend):
        asked = openai_reply(server, False, messages=ASK_WEATHER, tools=[WEATHER])
        with server.client() as http:
            more = http.post(
                "/v1/chat/completions",
                json={
                    "thread_id": asked.extra["thread_id"],
                    "messages": [{"role": "user", "content": "What did I ask?"}],
                },
            )
    assert more.status_code == 200, more.text
    assert '"city": "Oslo"' in backend.prompts[1]  # the call is part of the history
