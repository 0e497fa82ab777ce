"""What learnloop writes is its owner's alone: no group or other permission bits.

The data root it makes is 0700; inside it the database, its ``.wal``, the run folders
with their snapshots and logs, and the adapters are private, also where the trainer
child writes them, whatever umask the shell had. An existing data root keeps the mode
its owner gave it (it may be shared on purpose).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from learnloop.storage.store import Store
from tests.helpers import make_log, run_cli, run_json
from tests.test_trainer import make_run, sft_rows, tiny_config

OPEN_UMASK = 0o022  # a common shell default: files 0644, folders 0755


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """Start from a permissive umask, as a user's shell does; restore the old one after."""
    previous = os.umask(OPEN_UMASK)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def shared_bits(root: Path) -> dict[str, str]:
    """Every path under ``root`` that its group or others may use, with its mode."""
    return {str(p.relative_to(root)): oct(mode(p)) for p in root.rglob("*") if mode(p) & 0o077}


def test_a_new_data_root_is_private_and_so_is_the_database(home: Path) -> None:
    assert not home.exists()
    assert run_cli(None, "status").exit_code == 0
    assert mode(home) == 0o700
    assert mode(home / "learnloop.duckdb") == 0o600
    assert shared_bits(home) == {}


def test_the_wal_is_private_while_a_process_holds_the_database(home: Path) -> None:
    with Store() as store:
        store.add_turn(make_log())
        wal = home / "learnloop.duckdb.wal"
        assert wal.exists()  # committed rows wait here until the file is checkpointed
        assert mode(wal) == 0o600


def test_an_existing_data_root_keeps_its_mode(home: Path) -> None:
    home.mkdir(mode=0o750)
    os.chmod(home, 0o750)  # mkdir's mode is filtered by the umask
    assert run_cli(None, "status").exit_code == 0
    assert mode(home) == 0o750
    assert mode(home / "learnloop.duckdb") == 0o600


def test_runs_and_adapters_of_a_learning_cycle_are_private(
    home: Path, tiny_model_dir: Path
) -> None:
    with Store() as store:
        turn = store.add_turn(make_log("What is the capital of Italy?", "Rome."))
        store.add_feedback(turn, "up")
    learned = run_json(tiny_model_dir, "learn", "--max-steps", "1", "--gate", "false")
    assert learned["version"] == "v1"
    assert (home / "runs" / "run-1" / "sft.jsonl").is_file()
    assert any((home / "adapters" / "v1").iterdir())
    assert shared_bits(home) == {}


def test_the_trainer_writes_private_files_whatever_umask_it_starts_with(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    run_dir = make_run(tmp_path / "run", tiny_model_dir, sft_rows(2), None, **tiny_config())
    os.chmod(run_dir, 0o700)
    result = subprocess.run(
        [sys.executable, "-m", "learnloop.learning.trainer", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(OPEN_UMASK),  # not what the cycle gives it
    )
    assert result.returncode == 0, result.stderr
    made = [p for p in run_dir.rglob("*") if p.name not in ("request.json", "sft.jsonl")]
    assert {p.name for p in made} >= {"adapter", "adapter_model.safetensors", "metrics.json"}
    assert {str(p): oct(mode(p)) for p in made if mode(p) & 0o077} == {}
