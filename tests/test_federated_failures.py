"""A federation that meets trouble, as real processes on loopback with the tiny model: a
node that has nothing to learn fails each round (recorded with Flower's reason, the round
goes on with the others), and the aggregator killed after round 1 resumes at round 2 when
started again on the same folder, the nodes reconnecting by themselves."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.test_federated_deploy import (
    QUICK,
    flower_left,
    free_port,
    join_all,
    learnloop,
    leave_all,
    teach,
    versions,
)

pytestmark = pytest.mark.slow


def test_a_failing_node_is_left_out_and_a_killed_aggregator_resumes(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = {name: tmp_path / name for name in ("n0", "n1", "n2")}
    teach(roots["n0"], [("Who runs the Lisbon office?", "Marta does.")], monkeypatch)
    teach(roots["n1"], [("What is our build server called?", "Hopper.")], monkeypatch)
    roots["n2"].mkdir()  # joins, but has no feedback: nothing to learn
    port, out = free_port(), tmp_path / "fed"
    sets = [a for s in QUICK for a in ("--set", s)]
    nodes = join_all(roots, tiny_model_dir, f"127.0.0.1:{port}", tmp_path)
    first = learnloop("federate", "serve", "--out", str(out), "--port", str(port),
                      "--rounds", "2", "--min-nodes", "3", "--min-updates", "2", *sets,
                      home=tmp_path / "agg", log=tmp_path / "serve-1.log")  # fmt: skip
    try:
        round_one = out / "rounds" / "round-1.json"
        deadline = time.monotonic() + 600
        while not (round_one.exists() and "adopted" in round_one.read_text()):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(1)
        first.send_signal(signal.SIGKILL)  # the aggregator dies; its SuperLink goes with it
        first.wait()
        kept = round_one.read_text()
        again = learnloop("federate", "serve", "--out", str(out), "--port", str(port),
                          "--json", home=tmp_path / "agg",
                          log=tmp_path / "serve-2.log")  # fmt: skip
        code = again.wait(timeout=600)
    finally:
        leave_all(nodes)
    assert code == 0, (tmp_path / "serve-2.log").read_text()[-3000:]
    assert flower_left(tmp_path) == []  # the killed aggregator's SuperLink went with it
    assert round_one.read_text() == kept  # resumed after it, not redone
    rounds = json.loads((out / "results.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for record in rounds:
        assert len(record["nodes"]) == 2  # the two that had something to learn
        (why,) = record["failed"].values()
        assert "nothing to learn" in why.lower() or "NothingToLearn" in why
    assert [v for v in versions(roots["n2"]) if v.get("method") == "federated"] == []
    for name in ("n0", "n1"):
        federated = [v for v in versions(roots[name]) if v.get("method") == "federated"]
        assert [v["lineage"]["round"] for v in federated] == [1, 2]  # type: ignore[index]
