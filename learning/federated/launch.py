"""Flower's Deployment Engine as learnloop runs it: the processes and the ``flwr`` CLI.

``learnloop federate serve`` starts a SuperLink (Flower's aggregator service) with its
state in ``OUT/flower/superlink.db``, submits the run (``flwr run`` of the app in
``flower_app/``) and watches it; ``learnloop federate join ADDRESS`` runs a SuperNode for
this data root. Flower starts the apps itself: one ServerApp process per run under the
SuperLink, one ClientApp process per message under each SuperNode.

Invariants: every process gets its own ``FLWR_HOME`` (Flower installs the app there; two
processes sharing one could import a half-copied app), Flower's update check and
telemetry are off (no network is needed), and the runtime never installs dependencies
(learnloop is installed where the nodes run). A process this module starts is stopped
with SIGTERM and waited for (Flower's helper processes watch their parent's pid, and
an unreaped parent would keep them alive), SIGKILL after a grace period.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from learnloop.storage.errors import Unavailable, UsageError

CONNECTION = "learnloop"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
STOP_GRACE = 15.0


@dataclass(frozen=True)
class Tls:
    """Certificates: the SuperLink serves with ``cert`` and ``key``; nodes and the CLI
    trust ``ca``. None of them: plain HTTP, allowed on loopback only."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def flower_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)  # Flower's executables beside our python
    env.update(
        FLWR_HOME=str(home),
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    return env


def start(name: str, command: list[str], home: Path, log: Path) -> subprocess.Popen[bytes]:
    """A Flower process in its own session (a Ctrl-C reaches learnloop, which stops it),
    its output to ``log``; it is sent SIGTERM if learnloop dies first, however it dies."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            command, env=flower_env(home), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip


def die_with_parent() -> None:
    """In the child, before it runs Flower: have Linux send it SIGTERM when the process
    that started it dies (a killed ``serve`` or ``join`` leaves no SuperLink or SuperNode
    holding its port). Elsewhere nothing: stop() still ends it on a normal exit."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process and wait; then its descendants too (Flower's SuperExec and the
    app it was running live in sessions of their own, and an app mid-message can outlive
    its SuperNode), SIGKILL for whatever is left after the grace period."""
    family = descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        family = [pid for pid in family if signalled(pid, sig)]
        deadline = time.monotonic() + STOP_GRACE
        while family and time.monotonic() < deadline:
            time.sleep(0.2)
            family = [pid for pid in family if alive(pid)]


def descendants(root: int) -> list[int]:
    """The pids below ``root`` in the process tree (Linux /proc; elsewhere none)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def signalled(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def alive(pid: int) -> bool:
    """Running (a zombie, waiting for its parent to reap it, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def security(host: str, tls: Tls, *, serving: bool) -> list[str]:
    """The TLS flags of a SuperLink (``serving``) or SuperNode; plain HTTP only on
    loopback, since the adapter weights would cross the network in the clear."""
    if tls.ca is None and tls.cert is None:
        if host not in LOOPBACK:
            raise UsageError(
                f"{host} is not this machine: give --tls-ca (and, to serve, --tls-cert and "
                "--tls-key) so the adapters do not cross the network in the clear"
            )
        return ["--insecure"]
    if serving:
        if not (tls.ca and tls.cert and tls.key):
            raise UsageError("serving with TLS takes all three of --tls-ca, --tls-cert, --tls-key")
        return ["--ssl-ca-certfile", str(tls.ca), "--ssl-certfile", str(tls.cert),
                "--ssl-keyfile", str(tls.key)]  # fmt: skip
    return ["--root-certificates", str(tls.ca)]


class Aggregator:
    """A SuperLink and the run submitted to it, for ``learnloop federate serve``."""

    def __init__(self, out: Path, host: str, port: int, tls: Tls, auth: bool) -> None:
        self.out, self.port, self.tls = out, port, tls
        # how this machine reaches its own SuperLink (the certificate must name it too)
        self.local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.flower = out / "flower"
        command = [
            "flower-superlink", "--host", host, "--port", str(port),
            "--disable-runtime-dependency-installation",
            "--database", str(self.flower / "superlink.db"),
            *security(host, tls, serving=True),
        ]  # fmt: skip
        if auth:
            command.append("--enable-supernode-auth")
        self.process = start("superlink", command, self.flower / "home-superlink",
                             self.flower / "superlink.log")  # fmt: skip
        self.cli_home = self.flower / "home-cli"
        self._write_connection()

    def _write_connection(self) -> None:
        lines = [f'[superlink]\ndefault = "{CONNECTION}"\n', f"[superlink.{CONNECTION}]",
                 f'address = "{self.local}:{self.port}"']  # fmt: skip
        lines.append(f'root-certificates = "{self.tls.ca}"' if self.tls.ca else "insecure = true")
        self.cli_home.mkdir(parents=True, exist_ok=True)
        (self.cli_home / "config.toml").write_text("\n".join(lines) + "\n")

    def wait_ready(self, timeout: float = 60.0) -> None:
        import ssl

        scheme = "https" if self.tls.ca else "http"
        context = ssl.create_default_context(cafile=str(self.tls.ca)) if self.tls.ca else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Unavailable(self._died("the Flower SuperLink did not start"))
            try:
                url = f"{scheme}://{self.local}:{self.port}/health"
                with urllib.request.urlopen(url, timeout=2, context=context) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise Unavailable(self._died(f"the Flower SuperLink was not ready in {timeout:g} s"))

    def _died(self, what: str) -> str:
        log = self.flower / "superlink.log"
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return f"{what}: {tail[-1] if tail else 'no output'} (log: {log})"

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["flwr", *args], env=flower_env(self.cli_home), capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def register(self, public_key: Path, name: str) -> None:
        """Allow the node holding the private half of ``public_key`` to join."""
        done = self.flwr("supernode", "register", str(public_key), CONNECTION, "--name", name)
        if done.returncode != 0:
            raise UsageError(f"cannot register {public_key}: {last_line(done)}")

    def submit(self) -> str:
        """Submit the run; its id."""
        app = self.flower / "app"
        shutil.rmtree(app, ignore_errors=True)
        shutil.copytree(str(resources.files("learnloop.learning.federated") / "flower_app"), app)
        config = f"out-dir={json.dumps(str(self.out.resolve()))}"
        done = self.flwr("run", str(app), CONNECTION, "--run-config", config, "--format", "json")
        try:
            return str(json.loads(done.stdout)["run-id"])
        except (json.JSONDecodeError, KeyError) as exc:
            raise Unavailable(f"Flower refused the run: {last_line(done)}") from exc

    def status(self, run_id: str) -> dict[str, Any]:
        done = self.flwr("ls", CONNECTION, "--run-id", run_id, "--format", "json", timeout=60)
        try:
            runs: list[dict[str, Any]] = json.loads(done.stdout)["runs"]
            return runs[0]
        except (json.JSONDecodeError, KeyError, IndexError):
            return {"status": "unknown", "status-details": last_line(done)}

    def server_log(self, run_id: str) -> str:
        return self.flwr("log", run_id, CONNECTION, timeout=60).stdout

    def close(self) -> None:
        stop(self.process)


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


def supernode(
    address: str,
    node_config: Path,
    home: Path,
    tls: Tls,
    *,
    port: int,
    auth_key: Path | None = None,
    max_wait: float | None = None,
) -> subprocess.Popen[bytes]:
    """A SuperNode for one data root (``node_config`` names it, in TOML): it connects to
    the SuperLink at ``address`` and keeps retrying while it is away."""
    host = address.rsplit(":", 1)[0].strip("[]")
    command = [
        "flower-supernode", "--superlink", address, "--port", str(port),
        "--node-config", str(node_config), *security(host, tls, serving=False),
    ]  # fmt: skip
    if auth_key is not None:
        command += ["--auth-supernode-private-key", str(auth_key)]
    if max_wait is not None:
        command += ["--max-wait-time", str(max_wait)]
    return start("supernode", command, home, home / "supernode.log")
