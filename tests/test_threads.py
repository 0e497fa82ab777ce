"""Conversations as a person manages them: renamed, searched, deleted; every answer to a
message kept (regenerations are siblings); a stream the client leaves is stopped.

The API over a real uvicorn server and the tiny model (tests/serving.py), and the store
over the test's own DuckDB file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from learnloop.storage.errors import NotFound
from learnloop.storage.store import Store
from tests.helpers import make_log, refused
from tests.serving import Running, running_server
from tests.test_access import keyed, own  # noqa: F401 (keyed: a fixture)


@pytest.fixture
def server(tiny_model_dir: Path) -> Iterator[Running]:
    with running_server(tiny_model_dir) as running:
        yield running


def ask(http: httpx.Client, text: str, **extra: Any) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": text}], **extra}
    answer = http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


JSON = {"Content-Type": "application/json"}  # every call but a GET says it, bodiless too


def delete(http: httpx.Client, thread_id: str, **headers: str) -> httpx.Response:
    return http.delete(f"/v1/threads/{thread_id}", headers={**JSON, **headers})


def titles(http: httpx.Client, q: str | None = None) -> list[str]:
    listed = http.get("/v1/threads", params={"q": q} if q is not None else {})
    assert listed.status_code == 200, listed.text
    return [t["title"] for t in listed.json()]


# -- rename and search --------------------------------------------------------------------


def test_a_renamed_thread_is_listed_and_found_by_its_title(server: Running) -> None:
    with server.client() as http:
        first = ask(http, "How do I bake bread?")["thread_id"]
        ask(http, "What is 100% rye?")
        renamed = http.patch(f"/v1/threads/{first}", json={"title": "  Baking   notes "})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json() == {"id": first, "title": "Baking notes"}
        listed = {t["id"]: t for t in http.get("/v1/threads").json()}
        assert (listed[first]["title"], listed[first]["renamed"]) == ("Baking notes", True)
        assert titles(http) == ["What is 100% rye?", "Baking notes"]  # newest first

        assert titles(http, "baking") == ["Baking notes"]  # the title, any case
        assert titles(http, "BAKE BREAD") == ["Baking notes"]  # the messages too
        assert titles(http, "100%") == ["What is 100% rye?"]  # % is a character, not a pattern
        assert titles(http, "%") == ["What is 100% rye?"]
        assert titles(http, "sourdough") == []
        assert len(titles(http, "  ")) == 2  # a blank search is no search


@pytest.mark.parametrize("title", ["", "   ", "x" * 201])
def test_a_bad_title_is_refused_with_one_message_and_changes_nothing(
    server: Running, title: str
) -> None:
    with server.client() as http:
        thread = ask(http, "Hello")["thread_id"]
        answer = http.patch(f"/v1/threads/{thread}", json={"title": title})
        refused(answer, 400, "invalid_request_error", "title", "1 to 200 characters")
        assert titles(http) == ["Hello"]


def test_renaming_or_deleting_no_such_thread_is_a_404(server: Running) -> None:
    with server.client() as http:
        missing = http.patch("/v1/threads/nope", json={"title": "x"})
        refused(missing, 404, "not_found_error", "no thread 'nope'")
        refused(delete(http, "nope"), 404, "not_found_error", "no thread 'nope'")
        refused(http.patch("/v1/threads/nope", json={}), 422, "invalid_request_error", "title")
        long = http.get("/v1/threads", params={"q": "x" * 201})
        refused(long, 400, "invalid_request_error", "at most 200 characters")


# -- delete -------------------------------------------------------------------------------


def test_deleting_a_thread_takes_its_turns_and_feedback_and_nothing_else() -> None:
    with Store() as store:
        gone = [store.add_turn(make_log(f"gone {i}", thread_id="gone")) for i in range(2)]
        kept = store.add_turn(make_log("kept", thread_id="kept"))
        store.add_turn(make_log("gone again", thread_id="gone", regen_of=gone[1]))
        fb_gone = store.add_feedback(gone[0], "down", correction="better")
        fb_kept = store.add_feedback(kept, "up")
        run = store.start_run("sft", {}, str(Path.cwd()), 1)
        store.record_snapshot(run, "h", fb_kept, {"sft": [fb_gone, fb_kept]}, {"sft": 2})

        assert store.delete_thread("gone") == (3, 1)

        assert not store.thread_exists("gone")
        assert [t.log.thread_id for t in store.recent_turns(10)] == ["kept"]
        assert [e.feedback_id for e in store.feedback_examples()] == [fb_kept]
        # the run that used it still says which rows it used, by id only
        rows = store.db.execute("SELECT feedback_id FROM snapshot_feedback ORDER BY 1").fetchall()
        assert [r[0] for r in rows] == [fb_gone, fb_kept]
        with pytest.raises(NotFound, match="no thread 'gone'"):
            store.delete_thread("gone")


def test_a_deleted_thread_is_gone_from_the_api(server: Running) -> None:
    with server.client() as http:
        doomed = ask(http, "Forget me")
        kept = ask(http, "Keep me")
        rated = {"turn_id": doomed["turn_id"], "rating": "down", "correction": "Gone."}
        assert http.post("/v1/feedback", json=rated).status_code == 201
        deleted = delete(http, doomed["thread_id"])
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"id": doomed["thread_id"], "turns": 1, "feedback": 1}
        assert titles(http) == ["Keep me"]
        refused(http.get(f"/v1/threads/{doomed['thread_id']}"), 404, "not_found_error")
        rate = http.post("/v1/feedback", json={"turn_id": doomed["turn_id"], "rating": "up"})
        refused(rate, 404, "not_found_error", "no turn")
        status = http.get("/v1/status").json()
        assert (status["turns"], status["feedback"], status["threads"]) == (1, 0, 1)
        assert http.get(f"/v1/threads/{kept['thread_id']}").status_code == 200


def test_a_user_key_renames_and_deletes_only_its_own_threads(
    keyed: tuple[Running, dict[str, dict[str, str]]],  # noqa: F811
) -> None:
    server, auth = keyed
    alice, _ = own(server, "alice")
    with server.client() as http:
        for method, body in (("PATCH", {"title": "mine now"}), ("DELETE", None)):
            headers = {**JSON, **auth["bob"]}
            theirs = http.request(method, f"/v1/threads/{alice}", json=body, headers=headers)
            refused(theirs, 404, "not_found_error", f"no thread {alice!r}")
        assert server.state.store.thread_exists(alice)
        renamed = http.patch(
            f"/v1/threads/{alice}", json={"title": "Alice's"}, headers=auth["alice"]
        )
        assert renamed.status_code == 200, renamed.text
        listed = http.get("/v1/threads", headers=auth["alice"]).json()
        assert [t["title"] for t in listed] == ["Alice's"]
        assert http.get("/v1/threads", params={"q": "alice"}, headers=auth["bob"]).json() == []
        deleted = delete(http, alice, **auth["alice"])
        assert deleted.status_code == 200, deleted.text
        assert not server.state.store.thread_exists(alice)
        assert len(http.get("/v1/threads", headers=auth["root"]).json()) == 2  # bob's, op's


# -- regenerations as siblings ------------------------------------------------------------


def test_a_thread_lists_every_answer_to_a_message_oldest_first(server: Running) -> None:
    with server.client() as http:
        first = ask(http, "Tell me a joke")
        second = ask(http, "Another", thread_id=first["thread_id"])
        again = [
            http.post("/v1/chat/completions", json={"messages": [], "regen_of": regen}).json()
            for regen in (second["turn_id"], second["turn_id"])
        ]
        rated = {"turn_id": second["turn_id"], "rating": "down", "correction": "Knock knock."}
        assert http.post("/v1/feedback", json=rated).status_code == 201
        turns = http.get(f"/v1/threads/{first['thread_id']}").json()["turns"]
    assert [t["turn_id"] for t in turns] == [first["turn_id"], again[-1]["turn_id"]]
    assert [a["turn_id"] for a in turns[0]["answers"]] == [first["turn_id"]]
    answers = turns[1]["answers"]
    assert [a["turn_id"] for a in answers] == [second["turn_id"], *(a["turn_id"] for a in again)]
    assert answers[0]["feedback"][0]["correction"] == "Knock knock."  # the rated one stays
    assert [a["regen_of"] for a in answers] == [None, second["turn_id"], second["turn_id"]]


# -- a stream the client leaves -----------------------------------------------------------


def test_a_stream_the_client_leaves_is_stopped_and_logged_as_interrupted(
    server: Running,
) -> None:
    body = {
        "messages": [{"role": "user", "content": "Write a long story"}],
        "stream": True,
        "max_tokens": 900,  # the tiny model never ends by itself: long unless stopped
        "whole_answer": True,  # not ended at its first paragraph either
    }
    with (
        server.client() as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        turn_id = int(response.headers["X-Learnloop-Turn-Id"])
        pieces = 0
        for line in response.iter_lines():
            pieces += '"content"' in line
            if pieces >= 4:
                break  # the client goes away (the web page's Stop)
    store = server.state.store
    deadline = time.monotonic() + 60
    while True:
        try:
            logged = store.get_turn(turn_id).log
            break
        except NotFound:
            assert time.monotonic() < deadline, "the stopped answer was never logged"
            time.sleep(0.1)
    assert logged.interrupted
    assert logged.completion_tokens is not None and logged.completion_tokens < 900
    assert logged.answer  # the partial answer is kept
    with server.client() as http:  # the next answer is not stopped by the last one's leaving
        assert not store.get_turn(ask(http, "Hello")["turn_id"]).log.interrupted
