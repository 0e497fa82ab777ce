"""A federation of real processes on loopback: ``learnloop federate serve`` (a Flower
SuperLink and the run) and three ``learnloop federate join`` nodes (a SuperNode each,
its own data root), the tiny model, two rounds. The nodes reach the aggregator through
a relay that keeps every byte, so the test reads what crossed the wire: adapter
tensors, never a node's questions or corrections."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learnloop.storage.store import Store
from tests.helpers import make_log
from tests.wire import Relay

pytestmark = pytest.mark.slow

NODES = {
    "n0": [("Who runs the Lisbon office?", "Marta runs the Lisbon office.")],
    "n1": [("What is our build server called?", "Our build server is Hopper.")],
    "n2": [("Which day is the release?", "Releases go out on Thursdays.")],
}
# The tiny model never ends an answer: the nodes' gates (test_federated_node.py tests what
# they decide) compare 8 tokens, not 48 (on 2 cores they took 4 of a round's 5 minutes).
QUICK = ["max_steps=2", "lora_r=4", "method=sft", "sft_learning_rate=1e-2", "gate_max_new_tokens=8"]


def teach(root: Path, pairs: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNLOOP_HOME", str(root))
    with Store() as store:
        for question, fix in pairs:
            turn = store.add_turn(make_log(question, "no idea", thread_id=question))
            store.add_feedback(turn, "down", correction=fix)


def learnloop(*args: str, home: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LEARNLOOP_HOME": str(home)}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "learnloop.agent.cli", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def join_all(
    roots: dict[str, Path], model: Path, address: str, logs: Path
) -> list[subprocess.Popen[bytes]]:
    return [
        learnloop(
            "--model", str(model), "federate", "join", address, home=root, log=logs / f"{name}.log"
        )  # fmt: skip
        for name, root in roots.items()
    ]


def leave_all(nodes: list[subprocess.Popen[bytes]]) -> list[int]:
    for node in nodes:
        node.send_signal(signal.SIGTERM)
    return [node.wait(timeout=60) for node in nodes]


def flower_left(under: Path) -> list[str]:
    """Flower processes still running with their FLWR_HOME under ``under`` (a SuperNode's
    SuperExec or ClientApp left behind), after a few seconds' grace."""
    from learnloop.learning.federated.launch import alive

    deadline, left = time.monotonic() + 20, ["?"]
    while left and time.monotonic() < deadline:
        left = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if f"FLWR_HOME={under}".encode() in environ.read_bytes():
                    pid = int(environ.parent.name)
                    if alive(pid) and pid != os.getpid():
                        left.append((environ.parent / "cmdline").read_text().replace("\0", " "))
            except (OSError, ValueError):
                continue
        time.sleep(0.5 if left else 0)
    return left


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def versions(root: Path) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "learnloop.agent.cli", "versions", "--json"],
        env={**os.environ, "LEARNLOOP_HOME": str(root)}, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return list(json.loads(done.stdout))


def test_three_nodes_two_rounds_and_only_weights_on_the_wire(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = {name: tmp_path / name for name in NODES}
    for name, pairs in NODES.items():
        teach(roots[name], pairs, monkeypatch)
    port = free_port()
    relay = Relay(("127.0.0.1", port))
    out = tmp_path / "fed"
    sets = [a for s in QUICK for a in ("--set", s)]
    server = learnloop("federate", "serve", "--out", str(out), "--port", str(port),
                       "--rounds", "2", "--min-nodes", "3", "--wait-nodes", "300", *sets,
                       "--json", home=tmp_path / "agg", log=tmp_path / "serve.log")  # fmt: skip
    nodes = [
        learnloop(
            "--model",
            str(tiny_model_dir),
            "federate",
            "join",
            f"127.0.0.1:{relay.port}",
            home=roots[name],
            log=tmp_path / f"{name}.log",
        )  # fmt: skip
        for name in NODES
    ]
    try:
        code = server.wait(timeout=900)
    finally:
        for node in nodes:
            node.send_signal(signal.SIGTERM)
        left = [node.wait(timeout=60) for node in nodes]
        relay.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert left == [0, 0, 0]

    results = json.loads((out / "results.json").read_text())
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    for record in results["rounds"]:
        assert len(record["nodes"]) == 3 and record["examples"] == 3
        assert record["failed"] == {} and record["rejected"] == {}
        assert record["bytes_from_nodes"] > 0 and len(record["adopted"]) == 3
    assert results["rounds"][0]["bytes_to_nodes"] == 0  # round 1 starts from the seed

    # every node keeps each round's adapter as a version, with where it came from
    for name, root in roots.items():
        federated = [v for v in versions(root) if v.get("method") == "federated"]
        assert [v["lineage"]["round"] for v in federated] == [1, 2], name  # type: ignore[index]
        lineage = federated[1]["lineage"]
        assert lineage["federation"] == "fed" and lineage["aggregation"] == "fedavg"  # type: ignore[index]
        assert not (root / "federation").exists()  # no round's text left behind

    wire = relay.bytes()
    assert b"lora_A" in wire and b"lora_B" in wire  # the relay saw the adapters go by
    for pairs in NODES.values():
        for question, fix in pairs:
            for text in (question, fix):
                assert text.encode() not in wire, f"{text!r} crossed the wire"
