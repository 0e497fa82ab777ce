"""Where an answer ends and what the model sees: OpenAI's ``stop``, the first-paragraph
stop, and conversations longer than the model's context.

- ``stop`` (a string or up to 4) ends an answer before the first stop string, streaming
  or not, through the official ``openai`` client; no piece of a stop string is ever sent;
- an answer ends at its first complete paragraph unless the message asks for more or
  ``whole_answer`` is set; such a turn is logged as stopped there, not as cut off, and a
  thumbs-up on it is a whole SFT target;
- a conversation longer than the model's context (the tiny model's is 1024 tokens) has its
  oldest earlier messages left out, never the system prompt nor the new message; the
  terminal says so on stderr, the API in ``X-Learnloop-Trimmed`` and ``trimmed``; the
  turn logs what the model saw; a message that does not fit alone is refused, naming the
  limit, with nothing logged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import BadRequestError, OpenAI, UnprocessableEntityError

from learnloop.agent.config import GenerationConfig, asks_for_more
from learnloop.agent.graph import model_step, turn_log
from learnloop.agent.runtime import Agent
from learnloop.agent.stopping import StopScanner
from learnloop.agent.transformers_engine import TransformersBackend
from learnloop.learning.datasets import build_sft
from learnloop.storage.store import Store
from tests.helpers import run_cli
from tests.serving import Running, running_server

SEEDED = GenerationConfig(max_new_tokens=16, temperature=1.0, seed=7)  # reproducible text
LONG = "Tell me about the weather in the mountains in winter. " * 25  # ~300 tokens
WHOLE = {"whole_answer": True}  # the tiny model's text, unstopped by a paragraph end


def scan(pieces: list[str], stops: tuple[str, ...] = (), *, paragraph: bool = False) -> Any:
    scanner = StopScanner(stops, paragraph=paragraph)
    shown = [scanner.feed(p) for p in pieces] + [scanner.finish()]
    return shown, scanner.stopped_by


# -- where an answer ends ------------------------------------------------------------------


class TestTheStopScanner:
    def test_a_stop_string_split_across_pieces_is_never_shown(self) -> None:
        shown, by = scan(["The end", " is E", "N", "D; more after"], ("END",))
        assert "".join(shown) == "The end is " and by == "stop"
        assert not any("E" in piece for piece in shown[1:])  # not even its first letter

    def test_text_held_back_is_shown_when_no_stop_string_comes(self) -> None:
        shown, by = scan(["Almost EN", "DING, no"], ("END!",))
        assert "".join(shown) == "Almost ENDING, no" and by is None

    def test_the_earliest_of_several_stop_strings_ends_the_answer(self) -> None:
        shown, by = scan(["one, two; three. four"], (".", ";", "four"))
        assert "".join(shown) == "one, two" and by == "stop"

    def test_an_answer_ends_at_its_first_complete_paragraph(self) -> None:
        answer = "The capital of Australia is Canberra.\n\nIt was chosen in 1908 as a compromise."
        shown, by = scan([answer[:38], answer[38:]], paragraph=True)
        assert "".join(shown) == "The capital of Australia is Canberra." and by == "paragraph"

    @pytest.mark.parametrize(
        "answer",
        [
            "Here are the steps to follow:\n\n1. Remove the wheel.\n\n2. Find the hole.",
            "1. Remove the wheel first of all.\n\n2. Find the hole.",
            "Use this code:\n\n```python\nprint('It works.')\n\nprint('again')\n```",
            "Sure!\n\nIt is two words",
            "A paragraph that has no end yet\n\nbecause it goes on",
        ],
    )
    def test_a_paragraph_that_announces_more_or_is_unfinished_does_not_end_it(
        self, answer: str
    ) -> None:
        shown, by = scan([answer], paragraph=True)
        assert "".join(shown) == answer and by is None

    def test_a_later_complete_paragraph_still_ends_the_answer(self) -> None:
        shown, by = scan(["Sure!\n\nParis is the capital of France.\n\nIt is big."], paragraph=True)
        assert "".join(shown) == "Sure!\n\nParis is the capital of France." and by == "paragraph"


class TestWhatAsksForMore:
    @pytest.mark.parametrize(
        "message",
        [
            "List five vegetables that grow in shade.",
            "Can you give me a list of birds?",
            "What are the steps to change a tyre?",
            "Write a poem about rain.",
            "Explain in detail how a fridge works.",
            "Show me Python code that reverses a string.",
            "Tell me more.",
        ],
    )
    def test_a_message_asking_for_more_gets_the_whole_answer(self, message: str) -> None:
        assert asks_for_more(message)
        assert GenerationConfig().for_message(message).whole_answer

    @pytest.mark.parametrize(
        "message",
        [
            "What is the capital of Australia?",
            "Why is the sky blue?",
            "Should I use a comma before 'and' in a list of three things?",
            "Hi!",
        ],
    )
    def test_an_ordinary_question_ends_at_its_first_paragraph(self, message: str) -> None:
        assert not asks_for_more(message)
        assert GenerationConfig().for_message(message) == GenerationConfig()

    def test_the_defaults_suit_a_cpu(self) -> None:
        config = GenerationConfig()
        assert config.max_new_tokens == 128 and not config.whole_answer and config.stop == ()

    def test_the_cli_flag_turns_the_paragraph_stop_off_and_help_says_so(self) -> None:
        shown = run_cli(None, "ask", "--help")
        assert shown.exit_code == 0
        assert "--whole-answer / --first-paragraph" in shown.stdout
        assert "first paragraph" in shown.stdout and "[default: 128]" in shown.stdout


def test_a_paragraph_stopped_answer_is_logged_so_and_liked_it_is_a_whole_sft_target() -> None:
    """The final chunk's metadata as agent/chat_model.py sends it for a paragraph stop."""
    meta = {
        "settings": GenerationConfig().to_dict(),
        "stopped_by": "paragraph",
        "truncated": False,
        "usage": {"input_tokens": 12, "output_tokens": 20},
    }
    answer = "The capital of Australia is Canberra."
    messages = [{"role": "user", "content": "What is the capital of Australia?"}]
    log = turn_log(
        [model_step({**meta, "content": answer})],
        meta,
        thread_id="t",
        user_message="q",
        messages=messages,
        answer=answer,
        nodes=[],
    )
    with Store() as store:
        turn_id = store.add_turn(log)
        store.add_feedback(turn_id, "up")
        logged = store.get_turn(turn_id).log
        (example,) = store.feedback_examples()
    assert logged.settings["stopped_by"] == "paragraph" and not logged.truncated
    rows, _ = build_sft([example])
    assert rows[0]["completion"] == [{"role": "assistant", "content": answer}]


# -- stop through the OpenAI client ----------------------------------------------------------


@pytest.fixture
def server(tiny_model_dir: Path) -> Iterator[Running]:
    with running_server(tiny_model_dir, generation=SEEDED) as running:
        yield running


def openai_client(server: Running) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused-on-loopback", max_retries=0)


def ask(client: OpenAI, content: str = "Hello there", **options: Any) -> Any:
    messages: Any = [{"role": "user", "content": content}]
    return client.chat.completions.create(
        model="learnloop", messages=messages, extra_body=WHOLE, **options
    )


def a_stop_inside(text: str) -> tuple[str, str]:
    """A stop string from the middle of ``text`` and the answer it leaves."""
    assert len(text.strip()) >= 6, text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    return stop, text[: text.find(stop)]


class TestStopThroughTheOpenAIClient:
    def test_stop_ends_the_answer_before_the_stop_string(self, server: Running) -> None:
        client = openai_client(server)
        whole = ask(client).choices[0].message.content
        stop, expected = a_stop_inside(whole)
        stopped = ask(client, stop=stop)
        assert stopped.choices[0].message.content == expected
        assert stopped.choices[0].finish_reason == "stop"
        logged = server.state.store.get_turn((stopped.model_extra or {})["turn_id"]).log
        assert logged.answer == expected and not logged.truncated
        assert logged.settings["stop"] == [stop] and logged.settings["stopped_by"] == "stop"

    def test_a_streamed_answer_never_sends_a_piece_of_the_stop_string(
        self, server: Running
    ) -> None:
        client = openai_client(server)
        whole = ask(client).choices[0].message.content
        stop, expected = a_stop_inside(whole)
        chunks = list(ask(client, stop=["\u2603\u2603", stop], stream=True))
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert "".join(pieces) == expected  # what was sent can't be taken back: never more
        assert chunks[-1].choices[0].finish_reason == "stop"

    def test_a_stop_string_that_never_comes_leaves_the_answer_whole(self, server: Running) -> None:
        client = openai_client(server)
        whole = ask(client).choices[0].message.content
        chunks = list(ask(client, stop="\u2603\u2603\u2603", stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
        assert chunks[-1].choices[0].finish_reason == "length"  # the tiny model never ends

    @pytest.mark.parametrize("stop", [["a", "b", "c", "d", "e"], [""], ""])
    def test_more_than_four_or_empty_stop_strings_are_refused(
        self, server: Running, stop: Any
    ) -> None:
        turns = len(server.state.store.recent_turns(100))
        with pytest.raises(UnprocessableEntityError, match="stop"):
            ask(openai_client(server), stop=stop)
        assert len(server.state.store.recent_turns(100)) == turns


# -- conversations longer than the model's context ------------------------------------------


def long_conversation(turns: int) -> list[Any]:
    messages: list[Any] = [{"role": "system", "content": "Be brief."}]
    for n in range(turns):
        messages += [
            {"role": "user", "content": f"{n}: {LONG}"},
            {"role": "assistant", "content": f"Answer {n}."},
        ]
    return [*messages, {"role": "user", "content": "And now?"}]


class TestALongConversation:
    def test_the_oldest_turns_are_left_out_and_the_turn_logs_what_the_model_saw(
        self, tiny_model_dir: Path
    ) -> None:
        notes: list[str] = []
        with Store() as store:
            backend = TransformersBackend(str(tiny_model_dir), tiny_model_dir.name)
            generation = GenerationConfig(max_new_tokens=8, system_prompt="Be brief.")
            agent = Agent(store, backend, generation, warn=notes.append)
            answers = [agent.ask(f"0: {LONG}", thread_id=None)]
            for n in range(1, 5):
                answers.append(agent.ask(f"{n}: {LONG}", thread_id=answers[0].thread_id))
            last = answers[-1]
            logged = store.get_turn(last.turn_id).log
        assert answers[0].trimmed == 0 and last.trimmed > 0 and last.trimmed % 2 == 0
        assert len(notes) >= 1 and "left out" in notes[-1] and "1024 tokens" in notes[-1]
        assert logged.messages[0] == {"role": "system", "content": "Be brief."}
        assert logged.messages[-1] == {"role": "user", "content": f"4: {LONG}".strip()}
        assert logged.messages[1]["role"] == "user"  # whole turns: no answer without question
        assert len(logged.messages) == 1 + 2 * 4 - last.trimmed + 1
        assert logged.settings["trimmed"] == last.trimmed
        assert logged.prompt == backend.render(logged.messages)
        assert logged.prompt_tokens <= 1024 - 8

    def test_the_terminal_says_what_was_left_out_and_refuses_what_cannot_fit(
        self, tiny_model_dir: Path
    ) -> None:
        first = run_cli(tiny_model_dir, "ask", LONG, "--json", "--max-new-tokens", "8")
        thread = json.loads(first.stdout)["thread_id"]
        for _ in range(3):
            later = run_cli(
                tiny_model_dir, "ask", LONG, "--thread", thread, "--max-new-tokens", "8"
            )
            assert later.exit_code == 0, later.output
        assert "learnloop: the conversation is longer than" in later.stderr
        assert "message(s) were left out" in later.stderr

        alone = run_cli(tiny_model_dir, "ask", "word " * 3000)
        assert alone.exit_code == 1
        assert "at most 896 fit" in alone.stderr  # 1024 less the default 128 for the answer
        with Store() as store:
            assert len(store.recent_turns(100)) == 4


class TestALongConversationThroughTheAPI:
    def test_the_client_is_told_how_many_messages_were_left_out(self, server: Running) -> None:
        client = openai_client(server)
        messages = long_conversation(5)
        raw = client.chat.completions.with_raw_response.create(model="learnloop", messages=messages)
        trimmed = int(raw.headers["X-Learnloop-Trimmed"])
        completion = raw.parse()
        assert trimmed > 0 and (completion.model_extra or {})["trimmed"] == trimmed
        logged = server.state.store.get_turn((completion.model_extra or {})["turn_id"]).log
        assert logged.messages == [messages[0], *messages[1 + trimmed :]]

        streamed = client.chat.completions.with_raw_response.create(
            model="learnloop", messages=messages, stream=True
        )
        assert streamed.headers["X-Learnloop-Trimmed"] == str(trimmed)
        assert {(c.model_extra or {})["trimmed"] for c in streamed.parse()} == {trimmed}

    def test_a_short_conversation_is_sent_whole(self, server: Running) -> None:
        raw = openai_client(server).chat.completions.with_raw_response.create(
            model="learnloop", messages=long_conversation(1)
        )
        assert raw.headers["X-Learnloop-Trimmed"] == "0"

    def test_a_message_that_cannot_fit_alone_is_a_400_naming_the_limit(
        self, server: Running
    ) -> None:
        turns = len(server.state.store.recent_turns(100))
        with pytest.raises(BadRequestError, match="at most 1008 fit") as refused:
            ask(openai_client(server), "word " * 3000)
        assert "1024 tokens" in str(refused.value)
        assert len(server.state.store.recent_turns(100)) == turns
