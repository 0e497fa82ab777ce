"""A federation over TLS with node authentication, set up with the README's commands
(openssl for a CA and the aggregator's certificate, ssh-keygen for a node's key): the
registered node trains a round, a node with a key the aggregator never saw is refused,
and plain HTTP to another machine is refused before anything starts."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.test_federated_deploy import QUICK, flower_left, free_port, learnloop, leave_all, teach

pytestmark = pytest.mark.slow

CERTS = """
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -noenc -days 365 \
  -subj /CN=learnloop-ca -keyout ca.key -out ca.pem
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-384 -noenc -subj /CN=127.0.0.1 \
  -keyout key.pem -out cert.csr
printf 'subjectAltName=IP:127.0.0.1,DNS:aggregator.example\\n' > san.ext
openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
  -extfile san.ext -out cert.pem
ssh-keygen -q -t ecdsa -b 384 -N "" -f n1
ssh-keygen -q -t ecdsa -b 384 -N "" -f stranger
"""


def test_tls_and_registered_nodes_only(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(["bash", "-euc", CERTS], cwd=keys, check=True, capture_output=True)
    teach(tmp_path / "n1", [("Who runs the Lisbon office?", "Marta does.")], monkeypatch)
    teach(tmp_path / "n2", [("What is our build server called?", "Hopper.")], monkeypatch)
    port, out = free_port(), tmp_path / "fed"
    tls = ["--tls-ca", str(keys / "ca.pem")]
    sets = [a for s in QUICK for a in ("--set", s)]
    server = learnloop("federate", "serve", "--out", str(out), "--port", str(port), *tls,
                       "--tls-cert", str(keys / "cert.pem"), "--tls-key", str(keys / "key.pem"),
                       "--node-key", str(keys / "n1.pub"), "--rounds", "1", "--min-nodes", "1",
                       "--adopt", "false", *sets, home=tmp_path / "agg",
                       log=tmp_path / "serve.log")  # fmt: skip
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # nodes join once their keys are registered
    while "federation fed: run" not in (tmp_path / "serve.log").read_text():
        assert time.monotonic() < deadline and server.poll() is None
        time.sleep(0.5)
    member = learnloop("--model", str(tiny_model_dir), "federate", "join", address, *tls,
                       "--auth-key", str(keys / "n1"), home=tmp_path / "n1",
                       log=tmp_path / "n1.log")  # fmt: skip
    stranger = learnloop("--model", str(tiny_model_dir), "federate", "join", address, *tls,
                         "--auth-key", str(keys / "stranger"), home=tmp_path / "n2",
                         log=tmp_path / "n2.log")  # fmt: skip
    try:
        code = server.wait(timeout=600)
        refused = stranger.wait(timeout=120)
    finally:
        leave_all([member, stranger])
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert flower_left(tmp_path) == []
    (only,) = json.loads((out / "results.json").read_text())["rounds"]
    assert only["examples"] == 1 and len(only["nodes"]) == 1  # n1's one correction
    assert refused == 1 and "SuperNode stopped" in (tmp_path / "n2.log").read_text()

    # plain HTTP to another machine: one line, nothing started
    result = run_cli(None, "federate", "join", "198.51.100.7:9092")
    assert result.exit_code == 1 and "--tls-ca" in result.output
