"""Faults in adapter folders and data roots must not stop the agent.

- Each version's adapter folder has a checksum, taken when it is published (or, for a
  version from before checksums, on its first load), and checked whenever it is loaded.
- The active version's folder deleted, emptied, truncated, given a garbage
  ``adapter_config.json`` or changed in place: ``learnloop ask`` says so in one line on
  stderr, answers with the newest intact version (or the base), and the history records
  the fallback (who ``learnloop``, why naming the damage); ``learnloop serve`` starts and
  serves the same way, and refuses, with a 503 naming the damage, to serve or activate
  the damaged version by name.
- Adapter and run folders are stored relative to the data root: a data root moved to
  another folder keeps answering with its versions; an older database's absolute paths
  are rewritten when it migrates.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from benchmarks.random_adapter import register_adapter, save_random_adapter
from learnloop.learning.adapters import checksum
from learnloop.storage import migrations
from learnloop.storage.home import adapters_dir, db_path
from learnloop.storage.store import Store
from tests.helpers import make_log, run_cli, run_json
from tests.serving import running_server

FAST = ("--max-new-tokens", "4")


def make_versions(model_dir: Path) -> dict[str, Path]:
    """v1 and v2, random adapters in the data root's adapters/ folder, v2 active and
    loaded once (its checksum recorded on that first load)."""
    folders = {}
    with Store() as store:
        for n, (name, modules) in enumerate([("v1", ["q_proj"]), ("v2", ["v_proj"])], start=1):
            folders[name] = adapters_dir() / name
            save_random_adapter(model_dir, folders[name], seed=n, modules=modules, r=4)
            register_adapter(store, name, folders[name], model_dir.name, "test", "random")
        store.activate("v2", who="test", why="the newest")
    first = run_json(model_dir, "ask", "Hello?", *FAST)
    assert first["version"] == "v2"
    with Store() as store:
        assert store.get_version("v2").checksum == checksum(folders["v2"])
    return folders


def delete(folder: Path) -> str:
    shutil.rmtree(folder)
    return f"its folder {folder} is missing"


def empty(folder: Path) -> str:
    for path in folder.iterdir():
        path.unlink()
    return f"its folder {folder} is empty"


def truncate(folder: Path) -> str:
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return f"{weights} is truncated ({len(data) // 2} of {len(data)} bytes)"


def garbage_config(folder: Path) -> str:
    (folder / "adapter_config.json").write_text("{this is not json")
    return f"{folder / 'adapter_config.json'} is not valid JSON (JSONDecodeError)"


def change_a_byte(folder: Path) -> str:
    weights = folder / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the last weight's last byte: the file still parses and loads
    weights.write_bytes(bytes(data))
    return f"the files in {folder} changed since it was published"


DAMAGE: list[Callable[[Path], str]] = [delete, empty, truncate, garbage_config, change_a_byte]


def damage_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "damaged" in line]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_ask_falls_back_to_the_newest_intact_version_in_one_line(
    tiny_model_dir: Path, damage: Callable[[Path], str]
) -> None:
    folders = make_versions(tiny_model_dir)
    what = damage(folders["v2"])

    result = run_cli(tiny_model_dir, "ask", "Hello again?", "--json", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["version"] == "v1"
    assert "Traceback" not in result.stderr
    assert damage_lines(result.stderr) == [
        f"learnloop: the adapter of version v2 is damaged: {what}; "
        "answering with v1 instead (see `learnloop history`)"
    ]
    last = run_json(None, "history")[-1]
    assert (last["version"], last["who"], last["why"]) == (
        "v1",
        "learnloop",
        f"fallback from v2: {what}",
    )

    again = run_cli(tiny_model_dir, "ask", "And now?", "--json", *FAST)  # settled: no warning
    assert json.loads(again.stdout)["version"] == "v1" and not damage_lines(again.stderr)


def test_with_every_version_damaged_the_base_answers(tiny_model_dir: Path) -> None:
    folders = make_versions(tiny_model_dir)
    delete(folders["v2"])
    truncate(folders["v1"])
    result = run_cli(tiny_model_dir, "ask", "Hello again?", "--json", *FAST)
    assert result.exit_code == 0 and json.loads(result.stdout)["version"] == "base"
    assert damage_lines(result.stderr)[0].endswith(
        "answering with base instead (see `learnloop history`)"
    )
    last = run_json(None, "history")[-1]
    assert (last["version"], last["who"]) == ("base", "learnloop")


def test_serve_starts_on_a_damaged_active_version_and_names_the_damage(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders = make_versions(tiny_model_dir)
    what = truncate(folders["v2"])
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    with running_server(tiny_model_dir) as server, server.client() as http:
        assert server.state.active == "v1"
        answered = http.post("/v1/chat/completions", json={**body, "model": "learnloop"})
        assert answered.status_code == 200 and answered.json()["version"] == "v1"
        for response in (
            http.post("/v1/chat/completions", json={**body, "model": "v2"}),
            http.post("/v1/versions/v2/activate", json={}),
        ):
            assert response.status_code == 503, response.text
            assert response.json()["error"]["message"] == (
                f"the adapter of version v2 is damaged: {what}"
            )
        assert server.state.active == "v1" and server.state.store.active_version() == "v1"
        history = http.get("/v1/versions").json()
        assert [v["id"] for v in history if v.get("active")] == ["v1"]
    assert damage_lines(capsys.readouterr().err) == [
        f"learnloop: the adapter of version v2 is damaged: {what}; "
        "answering with v1 instead (see `learnloop history`)"
    ]


def test_a_moved_data_root_answers_with_its_published_version(
    tiny_model_dir: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store() as store:
        for n in range(3):
            turn = store.add_turn(make_log(f"What is {n} + {n}?", "no idea", thread_id=f"t{n}"))
            store.add_feedback(turn, "down", correction=f"{n + n}.")
    learned = run_json(tiny_model_dir, "learn", "--max-steps", "1", "--gate", "false")
    assert learned["version"] == "v1" and learned["promoted"]
    with Store() as store:
        published = store.get_version("v1")
        assert published.checksum == checksum(Path(published.adapter_path))
    with duckdb.connect(str(db_path()), read_only=True) as raw:
        assert raw.execute("SELECT adapter_path FROM versions").fetchall() == [("adapters/v1",)]

    moved = tmp_path / "restored" / "elsewhere"
    moved.parent.mkdir()
    shutil.move(home, moved)
    monkeypatch.setenv("LEARNLOOP_HOME", str(moved))
    answer = run_cli(tiny_model_dir, "ask", "What is 1 + 1?", "--json", *FAST)
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.stdout)["version"] == "v1" and not damage_lines(answer.stderr)
    listed = {v["id"]: v for v in run_json(None, "versions")}
    assert listed["v1"]["adapter_path"] == str(moved / "adapters" / "v1")


def test_an_older_database_migrates_to_relative_paths_and_checksums_on_first_load(
    tiny_model_dir: Path, home: Path, tmp_path: Path
) -> None:
    """Paths under the data root become relative; one saved under a root since moved
    (gone there, present here) is pointed at this root; one outside stays as it was."""
    outside = tmp_path / "outside" / "v3"
    for folder in [home / "adapters" / "v1", home / "adapters" / "v2", outside]:
        save_random_adapter(tiny_model_dir, folder, seed=1, modules=["q_proj"], r=4)
    newer = [m for m in migrations.MIGRATIONS if m[0] >= 6]
    for entry in newer:
        migrations.MIGRATIONS.remove(entry)
    try:
        with Store() as old:
            for n, path in enumerate(
                [str(home / "adapters" / "v1"), "/gone/old-root/adapters/v2", str(outside)], start=1
            ):
                old.db.execute(
                    "INSERT INTO runs (status, method, config, run_dir) "
                    "VALUES ('succeeded', 'sft', '{}', ?)",
                    [str(home / "runs" / f"run-{n}")],
                )
                old.db.execute(
                    """INSERT INTO versions (id, parent, run_id, method, base_model,
                           adapter_path, sft_count, dpo_count, metrics)
                       VALUES (?, 'base', ?, 'sft', ?, ?, 1, 0, '{}')""",
                    [f"v{n}", n, tiny_model_dir.name, path],
                )
            old.db.execute("INSERT INTO activations (version_id, who, why) VALUES ('v2', 'x', 'y')")
    finally:
        migrations.MIGRATIONS.extend(newer)
        migrations.MIGRATIONS.sort()

    with Store() as store:
        raw = store.db.execute(
            "SELECT id, adapter_path, checksum FROM versions ORDER BY id"
        ).fetchall()
        assert raw == [
            ("v1", "adapters/v1", None),
            ("v2", "adapters/v2", None),
            ("v3", str(outside), None),
        ]
        assert [r.run_dir for r in store.runs()] == [
            str(home / "runs" / f"run-{n}") for n in (1, 2, 3)
        ]
        assert store.get_version("v2").adapter_path == str(home / "adapters" / "v2")
    answer = run_json(tiny_model_dir, "ask", "Hello?", *FAST)
    assert answer["version"] == "v2"
    with Store() as store:
        assert store.get_version("v2").checksum == checksum(home / "adapters" / "v2")
        assert store.get_version("v1").checksum is None  # not loaded yet


def test_activating_a_damaged_version_is_refused_in_one_line(tiny_model_dir: Path) -> None:
    folders = make_versions(tiny_model_dir)
    damage = garbage_config(folders["v1"])
    refused = run_cli(tiny_model_dir, "activate", "v1")
    assert refused.exit_code == 1
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert damage in refused.stderr
    assert run_json(tiny_model_dir, "status")["active_version"] == "v2"
