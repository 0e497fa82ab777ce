"""A local `learnloop learn` during which a server starts for the same data root.

The local learn releases the database while its trainer child runs; a server that starts
meanwhile takes it for good. When training ends the learn cannot publish itself, so it
hands the trained run to that server (``POST /v1/learn/{run}/publish``), which publishes
it: the run is never left 'running' with its adapter lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from learnloop.storage.home import runs_dir, server_file
from tests.serving import running_server


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_server_started_during_training_publishes_the_run(tiny_model_dir: Path) -> None:
    from tests.helpers import run_json

    turn = run_json(tiny_model_dir, "ask", "Capital of Italy?", "--max-new-tokens", "4")
    fix = ("--correction", "Rome.")
    assert run_json(tiny_model_dir, "feedback", str(turn["turn_id"]), "down", *fix)
    learn = subprocess.Popen(
        [sys.executable, "-m", "learnloop.agent.cli", "--model", str(tiny_model_dir), "learn",
         "--json", "--max-steps", "30", "--gate", "false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip
    try:
        wait_for(runs_dir() / "run-1" / "progress.jsonl")  # training: the database is free
        with running_server(tiny_model_dir) as server:
            server_file().write_text(json.dumps({"url": server.url, "pid": os.getpid()}))
            out, err = learn.communicate(timeout=300)
            run = server.state.store.get_run(1)
            version = server.state.store.get_version("v1")
            served = server.state.active
    finally:
        learn.kill()
    assert learn.returncode == 0, err
    assert "while run 1 trained; it publishes it" in err
    result = json.loads(out)
    assert (result["version"], result["run_id"], result["promoted"]) == ("v1", 1, True)
    assert run.status == "succeeded" and run.version_id == "v1"
    assert Path(version.adapter_path, "adapter_config.json").is_file()
    assert served == "v1"  # the server answers with it at once
