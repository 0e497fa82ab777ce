"""``learnloop versions rm``: a version's adapter files go, its row stays.

Over real adapters (random LoRA weights on the tiny model, in the data root's
``adapters/`` as a cycle leaves them) registered in a real store: files deleted, row
kept and shown as removed, activating it refused in one line, the active version and
unknown versions refused with nothing changed, ``--rejected`` and ``--dry-run``; the same
through a running server, for the operator and admin keys only.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from benchmarks.random_adapter import save_random_adapter
from learnloop.agent.client import ServerClient
from learnloop.agent.remote import RemoteService
from learnloop.learning.adapters import checksum
from learnloop.storage.home import adapters_dir
from learnloop.storage.records import Version
from learnloop.storage.store import Store
from tests.helpers import refused, run_cli, run_json
from tests.serving import running_server

STATUS = {"v1": "promoted", "v2": "rejected", "v3": "rejected"}


def seed(model_dir: Path) -> dict[str, Path]:
    """v1 (promoted, active), v2 and v3 (rejected by the gate), each with its adapter."""
    folders = {v: adapters_dir() / v for v in STATUS}
    with Store() as store:
        for n, (version_id, status) in enumerate(STATUS.items()):
            save_random_adapter(model_dir, folders[version_id], seed=n, modules=["q_proj"], r=4)
            run_id = store.start_run("sft", {}, str(folders[version_id]), 0)
            record = Version(
                id=version_id,
                parent="base",
                run_id=run_id,
                method="sft",
                base_model=model_dir.name,
                adapter_path=str(folders[version_id]),
                sft_count=1,
                dpo_count=0,
                metrics={},
                created_at=datetime.now() + timedelta(seconds=n),
                status=status,
                gate={"promote": status == "promoted", "reasons": ["by hand"]},
                checksum=checksum(folders[version_id]),
            )
            store.add_version(record, activate=version_id == "v1", who="test", why="seeded")
    return folders


def one_line_error(result: object, *words: str) -> str:
    assert getattr(result, "exit_code", None) == 1
    message = str(getattr(result, "stderr", "")).strip()
    assert len(message.splitlines()) == 1, message
    assert all(w in message for w in words), message
    return message


def bytes_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_rm_deletes_the_files_keeps_the_row_and_activating_it_says_so(
    tiny_model_dir: Path,
) -> None:
    folders = seed(tiny_model_dir)
    size = bytes_of(folders["v2"])

    dry = run_json(None, "versions", "rm", "v2", "--dry-run")
    assert dry == {
        "dry_run": True,
        "removed": [{"id": "v2", "status": "rejected", "bytes": size}],
        "already_removed": [],
        "kept": [],
        "bytes_freed": size,
    }
    assert folders["v2"].is_dir()  # a dry run removes nothing

    done = run_cli(None, "versions", "rm", "v2")
    assert done.exit_code == 0, done.output
    assert "removed the files of v2 (rejected" in done.stdout and "freed" in done.stdout
    assert not folders["v2"].exists() and folders["v3"].is_dir()

    listed = {v["id"]: v for v in run_json(None, "versions")}
    assert set(listed) == {"base", "v1", "v2", "v3"}  # the row stays
    assert listed["v2"]["removed_at"] is not None and listed["v3"]["removed_at"] is None
    assert "files removed" in run_cli(None, "versions").stdout

    history = run_json(None, "history")
    one_line_error(
        run_cli(None, "activate", "v2"), "files of version v2 were removed", "versions rm"
    )
    assert run_json(None, "history") == history  # nothing switched
    again = run_json(None, "versions", "rm", "v2")
    assert again["removed"] == [] and again["already_removed"] == ["v2"]


def test_the_active_version_and_unknown_ones_are_refused_with_nothing_removed(
    tiny_model_dir: Path,
) -> None:
    folders = seed(tiny_model_dir)
    one_line_error(
        run_cli(None, "versions", "rm", "v2", "v1"), "v1 is the active version", "activate another"
    )
    one_line_error(run_cli(None, "versions", "rm", "v2", "v9"), "no version 'v9'")
    one_line_error(run_cli(None, "versions", "rm", "base"), "base model has no adapter files")
    one_line_error(run_cli(None, "versions", "rm"), "--rejected")
    assert all(folder.is_dir() for folder in folders.values())
    assert all(v.get("removed_at") is None for v in run_json(None, "versions"))


def test_rejected_removes_every_rejected_version_but_an_active_one(tiny_model_dir: Path) -> None:
    folders = seed(tiny_model_dir)
    assert run_cli(None, "activate", "v3").exit_code == 0  # rejected, made active by hand

    done = run_json(None, "versions", "rm", "--rejected")
    assert [r["id"] for r in done["removed"]] == ["v2"]
    assert done["kept"] == [{"id": "v3", "why": "it is the active version"}]
    assert not folders["v2"].exists() and folders["v3"].is_dir() and folders["v1"].is_dir()

    nothing = run_cli(None, "versions", "rm", "--rejected", "--dry-run")
    assert nothing.exit_code == 0
    assert "no version's files to remove" in nothing.stdout and "kept v3" in nothing.stdout


def test_through_a_running_server_for_admins_only(tiny_model_dir: Path) -> None:
    folders = seed(tiny_model_dir)
    with Store() as store:
        _, user_key = store.create_api_key("alice")
        _, admin_key = store.create_api_key("root", role="admin")
    with running_server(tiny_model_dir, require_keys=True) as server, server.client() as http:
        body = {"versions": ["v2"]}
        user = http.post(
            "/v1/versions/remove", json=body, headers={"Authorization": f"Bearer {user_key}"}
        )
        refused(user, 403, "permission_error", "admin key")
        assert folders["v2"].is_dir()

        # the CLI's way through a server: the same call as a request
        remote = RemoteService(ServerClient(server.url, os.getpid(), admin_key))
        assert remote.remove_versions(["v2"])["bytes_freed"] > 0
        assert not folders["v2"].exists()

        admin = {"Authorization": f"Bearer {admin_key}"}
        active = http.post("/v1/versions/remove", json={"versions": ["v1"]}, headers=admin)
        refused(active, 409, "conflict_error", "v1 is the active version")
        unknown = http.post("/v1/versions/remove", json={"versions": ["v7"]}, headers=admin)
        refused(unknown, 404, "not_found_error", "v7")
        switch = http.post("/v1/versions/v2/activate", json={}, headers=admin)
        refused(switch, 409, "conflict_error", "files of version v2 were removed")
        asked = http.post(
            "/v1/chat/completions",
            json={"model": "v2", "messages": [{"role": "user", "content": "Hi"}]},
            headers=admin,
        )
        refused(asked, 409, "conflict_error", "files of version v2 were removed")
        models = [m["id"] for m in http.get("/v1/models", headers=admin).json()["data"]]
        assert "v2" not in models and "v3" in models  # what a client may ask for
        listed = {v["id"]: v for v in http.get("/v1/versions", headers=admin).json()}
        assert listed["v2"]["removed_at"] is not None
        assert folders["v1"].is_dir() and folders["v3"].is_dir() and listed["v1"]["active"]


def test_bad_bodies_are_a_400_not_a_500(tiny_model_dir: Path) -> None:
    seed(tiny_model_dir)
    with running_server(tiny_model_dir) as server, server.client() as http:
        for body in ({"versions": "v2"}, {"versions": [""]}, {"rejected": "maybe"}):
            answer = http.post("/v1/versions/remove", json=body)
            assert 400 <= answer.status_code < 500, answer.text
        listed = http.get("/v1/versions").json()
    assert all(v.get("removed_at") is None for v in listed)  # nothing changed
