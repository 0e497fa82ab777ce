"""The agent graph and the running agent, on the tiny model with a real store.

Thread memory comes from the store, so a new Agent (a restarted chat) continues a
thread; a /regen re-answers the same context; a version made active elsewhere is loaded
into the already-loaded model before the next answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learnloop.agent.config import GenerationConfig
from learnloop.agent.runtime import Agent
from learnloop.agent.stopping import stopped_by_limit
from learnloop.agent.transformers_engine import TransformersBackend
from learnloop.learning.config import LearnConfig
from learnloop.learning.cycle import run_cycle
from learnloop.learning.models import resolve_model
from learnloop.storage.errors import UsageError
from learnloop.storage.store import NotFound, Store
from tests.helpers import run_cli

GEN = GenerationConfig(max_new_tokens=6)


@pytest.fixture
def store() -> Store:
    with Store() as s:
        yield s


def make_agent(store: Store, model_dir: Path) -> Agent:
    return Agent(store, TransformersBackend(str(model_dir), model_dir.name), GEN)


def test_restarted_agent_resumes_thread_history(store: Store, tiny_model_dir: Path) -> None:
    first = make_agent(store, tiny_model_dir).ask("My name is Ada.")
    again = make_agent(store, tiny_model_dir)  # a new process would build a new agent
    second = again.ask("What is my name?", thread_id=first.thread_id)
    seen = store.get_turn(second.turn_id).log.messages
    assert seen == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": first.answer},
        {"role": "user", "content": "What is my name?"},
    ]


def test_regen_answers_the_same_context_and_replaces_it_in_history(
    store: Store, tiny_model_dir: Path
) -> None:
    agent = make_agent(store, tiny_model_dir)
    first = agent.ask("Hello")
    second = agent.ask("Tell me more", thread_id=first.thread_id)
    regen = agent.ask("", regen_of=second.turn_id)
    original, redo = store.get_turn(second.turn_id).log, store.get_turn(regen.turn_id).log
    assert redo.regen_of == second.turn_id and redo.messages == original.messages
    assert [t.id for t in store.thread_history(first.thread_id)] == [first.turn_id, regen.turn_id]
    third = agent.ask("Go on", thread_id=first.thread_id)
    assert store.get_turn(third.turn_id).log.messages[3]["content"] == regen.answer


def test_regen_with_a_fixed_seed_samples_a_new_answer_reproducibly(
    store: Store, tiny_model_dir: Path
) -> None:
    """A seeded chat (the bench's) must not repeat the same answer on every /regen, or a
    user who regenerates after a bad answer can never get a better one."""
    seeded = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=7)
    agent = Agent(store, TransformersBackend(str(tiny_model_dir), tiny_model_dir.name), seeded)
    first = agent.ask("Hello")
    regens = [agent.ask("", regen_of=first.turn_id) for _ in range(2)]
    answers = [first.answer, *(r.answer for r in regens)]
    assert len(set(answers)) == 3
    seeds = [store.get_turn(t).log.settings["seed"] for t in (first.turn_id, regens[1].turn_id)]
    assert seeds == [7, 9]  # logged, so each answer can be replayed
    assert store.answers_to(regens[0].turn_id) == 3
    again = agent.ask("Hello")  # a new prompt starts from the seed again
    assert again.answer == first.answer


def test_running_agent_swaps_in_a_new_version_without_reloading_the_base(
    store: Store, tiny_model_dir: Path
) -> None:
    agent = make_agent(store, tiny_model_dir)
    base_model = agent.backend.model
    answer = agent.ask("What is 2 + 2?")
    store.add_feedback(answer.turn_id, "down", correction="4")
    config = LearnConfig(max_steps=2, gate=False)
    result = run_cycle(store, resolve_model(str(tiny_model_dir)), config)
    switch = agent.sync_version()
    assert switch is not None and switch.version == result.version == "v1"
    assert agent.backend.model.get_base_model() is base_model  # adapter added, base kept
    assert agent.ask("What is 2 + 2?").version == "v1"
    assert agent.sync_version() is None  # nothing new: no reload


def test_an_answer_stopped_by_the_token_limit_is_logged_as_cut_off(
    store: Store, tiny_model_dir: Path
) -> None:
    answer = make_agent(store, tiny_model_dir).ask("Hello")  # the tiny model never ends
    log = store.get_turn(answer.turn_id).log
    assert (log.completion_tokens, log.truncated) == (GEN.max_new_tokens, True)


@pytest.mark.parametrize(
    ("new_ids", "cut"),
    [([5, 6, 7], True), ([5, 6, 2], False), ([5, 2], False), ([5, 6], False)],
)
def test_only_an_answer_using_the_whole_limit_without_an_end_token_is_cut_off(
    new_ids: list[int], cut: bool
) -> None:
    assert stopped_by_limit(new_ids, limit=3, end_ids={2}) is cut


def test_empty_message_and_unknown_thread_are_refused(store: Store, tiny_model_dir: Path) -> None:
    agent = make_agent(store, tiny_model_dir)
    with pytest.raises(UsageError, match="empty"):
        agent.ask("   ")
    with pytest.raises(NotFound, match="no thread"):
        agent.ask("hi", thread_id="nope")
    assert store.status().turns == 0


def test_backend_tokenizer_matches_the_one_training_uses(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from learnloop.agent.backend import load_tokenizer

    fast, auto = load_tokenizer(str(tiny_model_dir)), AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Héllo  wörld, what's 2+2?\n\nOK 🙂"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "and 3+3?"},
    ]
    text = fast.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == auto.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = fast(text, add_special_tokens=False)["input_ids"]
    assert ids == auto(text, add_special_tokens=False)["input_ids"]
    assert (fast.eos_token, fast.pad_token) == (auto.eos_token, auto.pad_token)


def test_model_may_follow_the_command(tiny_model_dir: Path) -> None:
    """`learnloop ask "..." --model M` is `learnloop --model M ask "..."`."""
    model = ("--model", str(tiny_model_dir))
    after = run_cli(None, "ask", "Hello", "--json", "--max-new-tokens", "2", *model)
    assert after.exit_code == 0, after.output
    assert json.loads(run_cli(None, "status", "--json", *model).stdout)["model"] == str(
        tiny_model_dir
    )
