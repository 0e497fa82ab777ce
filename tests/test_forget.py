"""Forgetting a person: ``learnloop forget --user NAME`` and ``POST /v1/forget``.

Over a real store, real cycles on the tiny model (TRL in the trainer child) and a real
server: bob's feedback trains v1; alice's and bob's train v2, which is active. Forgetting
alice deletes her turns and feedback, retires v2 (its files gone, its row kept with the
reason), trains v3 from bob's feedback alone, and leaves alice's words nowhere under the
data root, database file included. Through a server, a user key may forget only itself,
and the server answers from the replacement before its next answer.
"""

from __future__ import annotations

import os
from pathlib import Path

from learnloop.agent.client import ServerClient
from learnloop.agent.remote import RemoteService
from learnloop.storage.home import data_root
from learnloop.storage.store import Store
from tests.helpers import make_log, refused, run_cli, run_json
from tests.serving import running_server

FAST_LEARN = ("--max-steps", "2", "--gate", "false")
FAST = {"max_steps": 2, "gate": False}
SECRETS = ("ALICE-ASKED-7f3a", "ALICE-FIXED-91c2")


def rate(store: Store, user: str, question: str, fix: str, thread: str) -> int:
    """A turn of ``user``'s, corrected by them."""
    turn = store.add_turn(make_log(question, "no idea", thread_id=thread, user_name=user))
    store.add_feedback(turn, "down", correction=fix, user_name=user)
    return turn


def files_holding(root: Path, text: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and text.encode() in path.read_bytes():
            found.append(str(path.relative_to(root)))
    return found


def seed(model: Path) -> None:
    """v1 from bob's feedback; v2 from alice's and bob's, active."""
    with Store() as store:
        rate(store, "bob", "What colour is the sky?", "Blue.", "tb1")
    assert run_cli(model, "learn", *FAST_LEARN).exit_code == 0
    with Store() as store:
        rate(store, "alice", f"Tell me {SECRETS[0]}.", f"It is {SECRETS[1]}.", "ta1")
        rate(store, "bob", "What is 2 + 2?", "4", "tb2")
    assert run_cli(model, "learn", *FAST_LEARN).exit_code == 0


def test_forget_retires_what_trained_on_them_and_leaves_no_trace(tiny_model_dir: Path) -> None:
    asked = run_json(tiny_model_dir, "ask", "Hello from alice", "--user", "alice")
    seed(tiny_model_dir)
    versions = {v["id"]: v for v in run_json(None, "versions", "--json")}
    assert versions["v1"]["users"] == ["bob"]
    assert versions["v2"]["users"] == ["alice", "bob"] and versions["v2"]["active"]
    assert all(files_holding(data_root(), s) for s in SECRETS)  # before: in the files
    with Store() as store:
        assert store.get_turn(asked["turn_id"]).log.user_name == "alice"
        v2_adapter = Path(store.get_version("v2").adapter_path)

    unknown = run_cli(tiny_model_dir, "forget", "--user", "carol", *FAST_LEARN)
    assert unknown.exit_code == 1 and "no turns or feedback of 'carol'" in unknown.stderr
    assert len(run_json(None, "versions", "--json")) == 3  # nothing changed

    out = run_json(tiny_model_dir, "forget", "--user", "alice", "--json", *FAST_LEARN)
    assert {k: out[k] for k in ("user", "turns_deleted", "feedback_deleted")} == {
        "user": "alice",
        "turns_deleted": 2,  # the question asked and the corrected turn
        "feedback_deleted": 1,
    }
    assert out["versions_retired"] == ["v2"]
    assert out["replacement"] == "v3" and out["active"] == "v3"

    versions = {v["id"]: v for v in run_json(None, "versions", "--json")}
    assert "alice" in versions["v2"]["retired_why"] and versions["v2"]["removed_at"]
    assert not v2_adapter.exists()
    assert versions["v3"]["users"] == ["bob"] and versions["v1"]["retired_why"] is None
    refused_switch = run_cli(None, "activate", "v2")
    assert refused_switch.exit_code == 1 and "retired" in refused_switch.stderr
    history = run_json(None, "history", "--json")
    forgets = [h["forget"] for h in history if h.get("forget")]
    assert forgets == [
        {
            "user": "alice",
            "turns_deleted": 2,
            "feedback_deleted": 1,
            "versions_retired": ["v2"],
            "replacement": "v3",
        }
    ]
    for secret in SECRETS:  # snapshots, the database file, its log: nowhere
        assert files_holding(data_root(), secret) == []
    with Store() as store:  # bob's rows are all there
        assert store.status().feedback == 2
        assert not store.user_exists("alice")


def test_through_a_server_a_user_key_forgets_only_itself(tiny_model_dir: Path) -> None:
    seed(tiny_model_dir)
    with Store() as store:
        _, alice_key = store.create_api_key("alice")
        _, admin_key = store.create_api_key("root", role="admin")
    with running_server(tiny_model_dir, require_keys=True) as server, server.client() as http:
        assert server.state.active == "v2"
        before = server.counts()
        as_alice = {"Authorization": f"Bearer {alice_key}"}
        other = http.post("/v1/forget", json={"user": "bob"}, headers=as_alice)
        refused(other, 403, "permission_error", "only its own user")
        assert server.counts() == before and server.state.active == "v2"

        remote = RemoteService(ServerClient(server.url, os.getpid(), alice_key))
        out = remote.forget("alice", settings=FAST)
        assert out["versions_retired"] == ["v2"] and out["replacement"] == "v3"
        assert out["active"] == "v3" and server.state.active == "v3"
        as_admin = {"Authorization": f"Bearer {admin_key}"}
        answer = http.post(
            "/v1/chat/completions",
            json={"model": "learnloop", "messages": [{"role": "user", "content": "hi"}]},
            headers=as_admin,
        )
        assert answer.status_code == 200 and answer.json()["version"] == "v3"
        retired = http.post(
            "/v1/chat/completions",
            json={"model": "v2", "messages": [{"role": "user", "content": "hi"}]},
            headers=as_admin,
        )
        assert retired.status_code == 409 and "retired" in retired.text
    for secret in SECRETS:
        assert files_holding(data_root(), secret) == []
