"""A damaged database file is reported in one line that says how to restore it.

A real data root with turns and feedback is damaged the ways files get damaged: cut to
half its size (a copy that did not finish), emptied, overwritten with garbage, one block
bit-flipped, its ``.wal`` garbled. Each CLI command that touches the store (`status`,
`feedback`, `ask`, `log`, `serve`) must then exit 1 with one line naming the file, the
damage and the way back (a backup of the file and its ``.wal``), never a traceback, and
must write nothing: a failed `feedback` leaves no row that a retry would duplicate.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from click.testing import Result

from learnloop.storage.store import Store
from tests.helpers import make_log, run_cli

TURNS = 30
RATED = 25  # more than the trigger's --learn-after (20): a feedback reads all of them
BLOCK = 262_144  # DuckDB's block size
HEADER = 3 * 4096  # DuckDB's file headers, before block 0


def fill(path: Path) -> None:
    """Turns with incompressible text, so that the turns table spans several blocks."""
    with Store(path) as store:
        for i in range(TURNS):
            noise = os.urandom(2_000).hex()
            turn = store.add_turn(make_log(f"question {i} {noise}", f"answer {noise}"))
            if i < RATED:
                store.add_feedback(turn, "up")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One healthy database file, copied into each test's data root."""
    path = tmp_path_factory.mktemp("pristine") / "learnloop.duckdb"
    fill(path)
    assert path.stat().st_size > 4 * BLOCK
    return path


def cut_to_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def empty(path: Path) -> None:
    os.truncate(path, 0)


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        data = f.read(64)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def garbled_wal(path: Path) -> None:
    """Leave committed rows in the .wal, as a killed process does, then garble it."""
    script = (
        "import duckdb, os, sys; db = duckdb.connect(sys.argv[1]); "
        "db.execute('PRAGMA disable_checkpoint_on_shutdown'); "
        "db.execute(\"INSERT INTO threads (id) SELECT 'wal-' || range FROM range(100)\"); "
        "os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    wal = path.with_name(path.name + ".wal")
    assert wal.stat().st_size > 400
    flip(wal, 100)  # inside the first entry after the header


DAMAGES: dict[str, Callable[[Path], None]] = {
    "cut to half": cut_to_half,
    "zero bytes": empty,
    "garbage bytes": garbage,
    "garbled wal": garbled_wal,
}
SIGNS = {
    "cut to half": "it was cut short",
    "zero bytes": "not a valid DuckDB database file",
    "garbage bytes": "not a valid DuckDB database file",
    "garbled wal": "Corrupt WAL file",
}


@pytest.fixture
def db(home: Path, pristine: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(pristine, home / "learnloop.duckdb"))


def digest(root: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob("learnloop.duckdb*"))
    }


def assert_damaged_line(result: Result, path: Path, sign: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert f"the database {path} is damaged" in line and sign in line
    assert "learnloop.duckdb.wal" in line and "backup" in line  # how to restore


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize(
    "command",
    [("status",), ("feedback", "3", "up"), ("log",), ("versions",), ("ask", "Hello")],
    ids=lambda c: c[0],
)
def test_every_command_says_in_one_line_that_the_file_is_damaged(
    db: Path, tiny_model_dir: Path, damage: str, command: tuple[str, ...]
) -> None:
    DAMAGES[damage](db)
    before = digest(db.parent)
    model = tiny_model_dir if command[0] == "ask" else None
    extra = ("--max-new-tokens", "4") if command[0] == "ask" else ()
    assert_damaged_line(run_cli(model, *command, *extra), db, SIGNS[damage])
    assert digest(db.parent) == before  # nothing was written to the damaged file


@pytest.mark.parametrize("damage", ["cut to half", "garbage bytes"])
def test_serve_does_not_start_on_a_damaged_file(
    db: Path, tiny_model_dir: Path, damage: str
) -> None:
    DAMAGES[damage](db)
    result = subprocess.run(
        [sys.executable, "-m", "learnloop.agent.cli", "--model", str(tiny_model_dir)]
        + ["serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"the database {db} is damaged" in result.stderr.strip().splitlines()[-1]


def test_the_size_check_passes_a_healthy_file_and_its_reopening(db: Path) -> None:
    for _ in range(2):
        with Store(db) as store:
            assert store.status().feedback == RATED


def raw_count(path: Path, sql: str) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def readable(path: Path, sql: str) -> bool:
    try:
        raw_count(path, sql)
    except duckdb.Error:
        return False
    return True


def bad_block_in_the_turns(db: Path) -> None:
    """Damage one block that holds turn texts only: the file opens, turn 3 is found, the
    feedback table reads, but reading every turn's text fails its checksum."""
    pristine = db.read_bytes()
    for block in range(1, (len(pristine) - HEADER) // BLOCK):
        db.write_bytes(pristine)
        flip(db, HEADER + block * BLOCK + 5_000)
        if (
            readable(db, "SELECT count(*) FROM turns WHERE id = 3")
            and readable(db, "SELECT count(hash(f)) FROM feedback f")
            and not readable(db, "SELECT count(hash(t)) FROM turns t")
        ):
            return
    pytest.fail("no block holds turn texts alone")


def test_a_failed_feedback_leaves_no_row_for_a_retry_to_duplicate(db: Path) -> None:
    bad_block_in_the_turns(db)
    for _ in range(2):  # the user retries
        assert_damaged_line(run_cli(None, "feedback", "3", "up"), db, "checksum")
    assert raw_count(db, "SELECT count(*) FROM feedback") == RATED
