"""A learning cycle that stays consistent with what happens around it.

- The candidate is measured against the version active when its run was prepared, and
  that version is its parent; a version someone activates while the trainer child runs
  is not overridden by the cycle's promotion (real cycle, real ``learnloop activate``).
- The promotion's check of the active version and its activation are one transaction.
- Preparing a run records the run, its real folder and its snapshot at once; a run whose
  files cannot be written leaves no row and no folder.
- A full disk ends the cycle naming "no space left on device". Two honest ways to make
  the kernel answer ENOSPC: a file the cycle writes through that is ``/dev/full`` (every
  write to it fails with ENOSPC), and, where the kernel lets an unprivileged user mount
  one in a private mount namespace (``unshare -r -m``), a real tiny tmpfs mounted over
  ``runs/``, which fills up while the snapshot is written or while the child trains.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from benchmarks.random_adapter import register_adapter, save_random_adapter
from learnloop.learning.config import LearnConfig
from learnloop.learning.cycle import DiskFull, prepare_run, run_cycle
from learnloop.learning.models import resolve_model
from learnloop.storage.home import db_path, runs_dir
from learnloop.storage.records import Version
from learnloop.storage.registry import ActiveChanged
from learnloop.storage.store import Store
from tests.helpers import make_log, run_cli, run_json

# Promoted on the numbers whatever the tiny random model does: nothing is held out, so
# nothing can win, and the control set may drop as far as it likes.
PROMOTING = LearnConfig(
    max_steps=1,
    held_out_share=0.0,
    promote_without_heldout=True,
    taught_min_gain=0.0,  # one step on liked answers makes them likelier: a win
    control_max_drop=1.0,
    control_max_logp_drop=1000.0,
)


def seed_feedback(store: Store, *, liked: bool = False) -> None:
    """Three corrected (or liked) answers in three threads: enough to train SFT."""
    for n in range(3):
        turn = store.add_turn(make_log(f"What is {n} + {n}?", f"{n + n}.", thread_id=f"t{n}"))
        if liked:
            store.add_feedback(turn, "up")
        else:
            store.add_feedback(turn, "down", correction=f"It is {n + n}.")


def test_a_version_activated_during_training_is_not_overridden_by_the_cycle(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with Store() as store:
        folder = tmp_path / "v1"
        save_random_adapter(tiny_model_dir, folder, seed=1, modules=["q_proj"], r=4)
        register_adapter(store, "v1", folder, tiny_model_dir.name, "test", "random adapter")
        seed_feedback(store, liked=True)
        switched: list[str] = []

        def activate_once(event: dict) -> None:  # runs while the trainer child runs
            if not switched:
                done = run_cli(None, "activate", "v1", "--why", "my own choice")
                assert done.exit_code == 0, done.output
                switched.append(event["stage"])

        result = run_cycle(
            store, resolve_model(str(tiny_model_dir)), PROMOTING, progress=activate_once
        )

    assert switched and switched[0] != "done"
    changed = (
        "the active version changed from base to v1 while this run trained; "
        "it was measured against base, so it is not promoted over v1"
    )
    # The numbers alone would have promoted it; the switch by hand wins.
    assert result.reasons[0].startswith("wins on what it was taught")
    assert result.reasons[-1] == changed
    assert (result.version, result.promoted, result.parent) == ("v2", False, "base")

    with Store() as store:
        assert store.active_version() == "v1"
        assert store.activations()[-1].why == "my own choice"
        v2 = store.get_version("v2")
        assert (v2.status, v2.parent) == ("rejected", "base")
        assert v2.gate is not None and v2.gate["active_version"] == "base"
        assert v2.gate["reasons"] == result.reasons
        # Both sides' control answers came with the version, in its transaction.
        assert store.control_answers("v2") and store.control_answers("base")
    beside = json.loads((Path(v2.adapter_path) / "learnloop-config.json").read_text())
    assert beside["parent"] == "base"
    shown = {v["id"]: v for v in run_json(None, "versions")}
    assert shown["v2"]["parent"] == "base" and shown["v2"]["gate"]["reasons"][-1] == changed
    assert shown["v1"]["active"]
    assert run_cli(None, "activate", "v2").exit_code == 0  # still usable by hand


def version(version_id: str, run_id: int, parent: str = "base") -> Version:
    return Version(
        id=version_id,
        parent=parent,
        run_id=run_id,
        method="sft",
        base_model="m",
        adapter_path=f"/elsewhere/{version_id}",
        sft_count=1,
        dpo_count=0,
        metrics={},
        created_at=datetime.now(),
    )


def test_a_promotion_is_refused_atomically_when_the_active_version_moved() -> None:
    answers = [{"prompt": "p", "answer": "a", "correct": True}]
    with Store() as store:
        first = store.start_run("sft", {}, "/runs/1", pid=1)
        store.add_version(version("v1", first), activate=False, who="t", why="t")
        store.activate("v1", who="someone", why="by hand")
        second = store.start_run("sft", {}, "/runs/2", pid=1)
        with pytest.raises(ActiveChanged) as err:
            store.add_version(
                version("v2", second),
                activate=True,
                who="gate",
                why="learning run 2",
                control_answers=answers,
                parent_control=answers,
                expect_active="base",
            )
        assert (err.value.expected, err.value.active) == ("base", "v1")
        # Nothing of the version was written: no row, no answers, the run still open.
        assert [v.id for v in store.versions()] == ["v1"]
        assert store.control_answers("v2") == store.control_answers("base") == []
        assert store.get_run(second).status == "running"
        assert store.active_version() == "v1"
        # Registered without activating, it lands whole: row, run closed, answers.
        store.add_version(
            version("v2", second),
            activate=False,
            who="gate",
            why="learning run 2",
            control_answers=answers,
            parent_control=answers,
        )
        assert store.get_run(second).status == "succeeded"
        assert store.control_answers("v2") == store.control_answers("base") == answers


def test_a_prepared_run_is_recorded_whole_with_its_real_folder(tiny_model_dir: Path) -> None:
    with Store() as store:
        seed_feedback(store)
        run_id, run_dir, _ = prepare_run(store, resolve_model(str(tiny_model_dir)), LearnConfig())
        run = store.get_run(run_id)
        assert run.run_dir == str(run_dir) and (run_dir / "request.json").is_file()
        assert run.snapshot_id is not None and run.active_at_start == "base"
        store.close()
    with duckdb.connect(str(db_path()), read_only=True) as raw:
        saved = raw.execute("SELECT run_dir FROM runs WHERE id = ?", [run_id]).fetchone()
    assert saved == (f"runs/run-{run_id}",)  # relative to the data root


def test_a_run_whose_files_cannot_be_written_records_nothing(tiny_model_dir: Path) -> None:
    with Store() as store:
        seed_feedback(store)
    runs_dir().parent.mkdir(parents=True, exist_ok=True)
    runs_dir().write_text("a file where the runs folder belongs")
    result = run_cli(tiny_model_dir, "learn")
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(f"cannot write the snapshot of run 1 in {runs_dir() / 'run-1'}: Not a directory")
    )
    with Store() as store:
        assert store.runs() == [] and store.running_run() is None


def test_publishing_onto_a_full_disk_fails_the_cycle_naming_it(tiny_model_dir: Path) -> None:
    """The cycle's own writes: once the trainer is done, the file that publishing writes
    the version's config through is ``/dev/full``, so that write gets ENOSPC."""
    with Store() as store:
        seed_feedback(store)

        def fill_disk(event: dict) -> None:
            if event["stage"] == "done":  # the child has exited; publishing comes next
                adapter = store.run_dir_of(store.running_run() or 0)
                (Path(adapter) / "adapter" / "learnloop-config.tmp").symlink_to("/dev/full")

        with pytest.raises(DiskFull) as err:
            run_cycle(store, resolve_model(str(tiny_model_dir)), PROMOTING, progress=fill_disk)
        message = str(err.value)
        assert message.startswith("no space left on device while writing the adapter of v1")
        assert message.endswith("free some space and learn again")
        run = store.runs()[-1]
        assert run.status == "failed" and run.error == message
        assert store.versions() == [] and store.active_version() == "base"


def can_mount_privately() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not can_mount_privately(), reason="no private mount namespace here")
@pytest.mark.parametrize(
    ("size", "stage"),
    [
        ("8k", "the snapshot"),  # two pages: the snapshot files do not fit
        ("64k", "training"),  # the snapshot fits; the trained adapter (~60 KB) does not
    ],
)
def test_a_full_disk_under_runs_ends_learn_naming_it(
    tiny_model_dir: Path, size: str, stage: str
) -> None:
    with Store() as store:
        seed_feedback(store)
    runs_dir().mkdir(parents=True)
    learnloop = Path(sys.executable).with_name("learnloop")
    script = f'mount -t tmpfs -o size={size} tmpfs "{runs_dir()}" && exec "$@"'
    result = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", script, "sh", str(learnloop)]
        + ["--model", str(tiny_model_dir), "learn", "--max-steps", "1", "--gate", "false"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "no space left on device" in last and "free some space" in last, result.stderr
    assert "Traceback" not in result.stderr
    with Store() as store:
        assert store.versions() == [] and store.active_version() == "base"
        runs = store.runs()
        if stage == "the snapshot":  # nothing recorded, nothing left behind
            assert runs == [] and f"writing {stage} of run" in last
        else:
            assert [r.status for r in runs] == ["failed"]
            assert runs[0].error is not None and last.endswith(runs[0].error)
