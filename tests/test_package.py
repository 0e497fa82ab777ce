"""The installed package: one `learnloop` namespace, nothing else of ours at top level."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]


def python_outside_checkout(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter whose working folder is not the checkout, so
    only what is installed can be imported."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_learnloop_imports_from_outside_the_checkout(tmp_path: Path) -> None:
    done = python_outside_checkout(
        tmp_path,
        "import learnloop.agent.cli, learnloop.learning.cycle, learnloop.storage.store\n"
        "from importlib import resources\n"
        "print(resources.files('learnloop.learning').joinpath('control.jsonl').is_file())\n"
        "print(resources.files('learnloop.agent').joinpath('web/index.html').is_file())\n",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]


@pytest.mark.parametrize("name", ["agent", "learning", "storage", "benchmarks"])
def test_no_bare_top_level_module_is_installed(tmp_path: Path, name: str) -> None:
    done = python_outside_checkout(tmp_path, f"import {name}")
    assert done.returncode == 1
    assert f"No module named '{name}'" in done.stderr


def test_the_console_script_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "learnloop"
    done = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "fine-tunes its own small model" in done.stdout
