"""``learnloop federate``: learn together with other learnloop nodes (Flower), each
node's feedback staying on its own machine; only adapter weights and counts travel."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import click

from learnloop.agent.bench.federated import SimulateConfig
from learnloop.agent.cli_support import config_from, emit, model_option
from learnloop.agent.options import dataclass_options, parse_settings
from learnloop.learning.config import LearnConfig
from learnloop.learning.federated.settings import SETTINGS_FILE, FederationSettings
from learnloop.storage.errors import Unavailable, UsageError

STATUS_POLL = 2.0
DEFAULT_PORT = 9092


class FederationFailed(Unavailable):
    """The federation run ended without its last round; its rounds so far are kept."""


def learn_settings_of(overrides: tuple[str, ...]) -> dict[str, Any]:
    try:
        return parse_settings(LearnConfig, overrides)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def tls_options(fn: Any) -> Any:
    for name, what in (
        ("--tls-key", "the SuperLink's private key (PEM), to serve with TLS"),
        ("--tls-cert", "the SuperLink's certificate (PEM), to serve with TLS"),
        ("--tls-ca", "the CA certificate that signed the SuperLink's (PEM): TLS; needed "
                     "unless everything runs on this machine"),
    ):  # fmt: skip
        fn = click.option(name, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                          default=None, help=what)(fn)  # fmt: skip
    return fn


@click.group()
def federate() -> None:
    """Federated learning with Flower: nodes train on their own feedback, an aggregator
    averages their adapters, every node gates the result and keeps it as a version.

    \b
    on the aggregator:  learnloop federate serve --out fed --rounds 3 --min-nodes 2
    on each node:       learnloop federate join AGGREGATOR:9092 --tls-ca ca.pem
    """


@federate.command()
@dataclass_options(FederationSettings)
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="the run's folder: settings, rounds, global adapters, results.json; "
              "an existing one resumes after its last complete round")  # fmt: skip
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="a learn setting every node trains with (a learn flag, with _)",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="port to listen on")
@tls_options
@click.option("--node-key", "node_keys", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a node's public key (OpenSSH, ECDSA); given: only nodes holding a "
              "registered key may join (needs TLS)")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print results.json at the end")
def serve(
    out: Path,
    overrides: tuple[str, ...],
    host: str,
    port: int,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    node_keys: tuple[Path, ...],
    as_json: bool,
    **values: Any,
) -> None:
    """Run the aggregator: a Flower SuperLink and one federation run on it, until its
    last round (nodes may join before or after it starts)."""
    from learnloop.learning.federated.launch import Aggregator, Tls
    from learnloop.learning.federated.rounds import RESULTS_FILE, RoundLog

    settings = settings_for(out, values, overrides)
    say = (lambda text: None) if as_json else (lambda text: click.echo(text, err=True))
    aggregator = Aggregator(out, host, port, Tls(tls_ca, tls_cert, tls_key), bool(node_keys))
    try:
        aggregator.wait_ready()
        for key in node_keys:
            aggregator.register(key, key.stem)
        run_id = aggregator.submit()
        say(f"federation {settings.name}: run {run_id} on {host}:{port}, "
            f"{settings.rounds} rounds, waiting for {settings.min_nodes} nodes")  # fmt: skip
        status = watch(aggregator, run_id, RoundLog(out), say)
    finally:
        aggregator.close()
    if status != "finished:completed":
        raise FederationFailed(failure(out, status))
    results = json.loads((out / RESULTS_FILE).read_text())
    emit(as_json, results, lambda: click.echo(f"done: {results['final_adapter']}"))


def settings_for(
    out: Path, values: dict[str, Any], overrides: tuple[str, ...]
) -> FederationSettings:
    """A new run's settings (saved in ``out``), or a resumed run's saved ones."""
    if (out / SETTINGS_FILE).is_file():
        if overrides or any(v is not None for v in values.values()):
            raise UsageError(f"{out} holds a federation run already; resume it without "
                             "settings, or give a new --out")  # fmt: skip
        return FederationSettings.load(out)
    given = {k: v for k, v in values.items() if v is not None}
    given.setdefault("name", out.resolve().name)
    settings = config_from(FederationSettings, {**given,
                           "learn": json.dumps(learn_settings_of(overrides))})  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    settings.save(out)
    return settings


def watch(aggregator: Any, run_id: str, log: Any, say: Any) -> str:
    """Poll the run until it ends, saying each round as it completes; its final status."""
    reported = 0
    while True:
        status = str(aggregator.status(run_id).get("status", ""))
        while (record := log.read(reported + 1)) and record.get("status") == "done":
            reported += 1
            say(round_line(record))
        if status.startswith("finished"):
            return status
        time.sleep(STATUS_POLL)


def round_line(record: dict[str, Any]) -> str:
    refused = {**record.get("failed", {}), **record.get("rejected", {})}
    line = (f"round {record['round']}: {len(record['nodes'])} nodes, {record['examples']} "
            f"examples, {record['aggregation']}, {record['seconds']:.0f} s")  # fmt: skip
    return line + "".join(f"\n  left out {node}: {why}" for node, why in refused.items())


def failure(out: Path, status: str) -> str:
    from learnloop.learning.federated.rounds import RoundLog

    rnd, reason = RoundLog(out).stopped()
    reason = reason or f"the run ended {status}"
    return (f"federation run stopped in round {rnd}: {reason}; rounds before it are kept in "
            f"{out} (`learnloop federate serve --out {out}` resumes)")  # fmt: skip


@federate.command()
@model_option
@click.argument("address")
@tls_options
@click.option("--auth-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="this node's private key (OpenSSH, ECDSA), when the "
              "aggregator admits registered nodes only")  # fmt: skip
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="this node's own learn settings (the federation's override them)",
)
@click.option("--port", default=0, help="local port for Flower's runtime [default: a free one]")
@click.pass_context
def join(
    ctx: click.Context,
    address: str,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    auth_key: Path | None,
    overrides: tuple[str, ...],
    port: int,
) -> None:
    """Take part in the federation at ADDRESS (host:port) with this data root, until
    Ctrl-C. Its feedback stays here: each round it trains on it and sends the adapter's
    weights; it gates each round's global adapter and keeps it as a version."""
    import tomli_w

    from learnloop.learning.federated.launch import Tls, stop, supernode
    from learnloop.learning.models import resolve_model
    from learnloop.storage.home import data_root

    model = resolve_model(ctx.obj.get("model") if ctx.obj else None)
    own = learn_settings_of(overrides)
    config_from(LearnConfig, own)  # a bad setting fails now, not in round 1
    home = data_root() / "flower"
    home.mkdir(parents=True, exist_ok=True)
    node_config = home / "node.toml"
    node_config.write_text(tomli_w.dumps(
        {"data-root": str(data_root()), "model": model.path, "learn": json.dumps(own)}
    ))  # fmt: skip
    process = supernode(address, node_config, home, Tls(tls_ca, tls_cert, tls_key),
                        port=port or free_port(), auth_key=auth_key)  # fmt: skip
    signal.signal(signal.SIGTERM, leave)  # a SIGTERM leaves as Ctrl-C does
    click.echo(f"node {data_root()} joined {address} (log: {home / 'supernode.log'}); "
               "Ctrl-C to leave", err=True)  # fmt: skip
    try:
        code = process.wait()
    except KeyboardInterrupt:
        code = 0
        click.echo(f"node {data_root()} left the federation", err=True)
    finally:
        stop(process)
    if code not in (0, -signal.SIGTERM):
        log = home / "supernode.log"
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        said = next((line for line in reversed(lines) if "[code:" in line), "")
        raise Unavailable(f"the Flower SuperNode stopped (exit {code}) {said}; see {log}")


def leave(*_: object) -> None:
    raise KeyboardInterrupt


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@federate.command()
@model_option
@dataclass_options(SimulateConfig)
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="a learn setting for every adapter trained (a learn flag, with _)")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print results.json instead of a table")
@click.pass_context
def simulate(ctx: click.Context, overrides: tuple[str, ...], as_json: bool, **values: Any) -> None:
    """Measure federated learning on one machine: simulated users teach a labelled task on
    --nodes nodes, each seeing mostly one label; then the federation (Flower's Simulation
    Engine, --rounds rounds), each node alone, and all feedback in one place are trained
    and scored on --eval. Example:

    \b
    learnloop federate simulate --nodes 4 --rounds 3 --interactions 150 \\
      --train ../shared/data/financial_phrasebank/train.jsonl \\
      --eval ../shared/data/financial_phrasebank/dev.jsonl \\
      --instruction "Classify the sentiment ... Answer with one word." \\
      --labels positive,negative,neutral --aggregation fedavg,svd --out fed-sim
    """
    from learnloop.agent.bench.federated import run_simulate, simulate_table
    from learnloop.agent.bench.simulated_user import learn_settings
    from learnloop.agent.cli_support import quiet_libraries

    quiet_libraries()
    config = config_from(SimulateConfig, values)
    mode = config.feedback
    learn = config_from(LearnConfig, learn_settings(mode, learn_settings_of(overrides),
                                                    labels=config.labels))  # fmt: skip
    say = (lambda text: None) if as_json else (lambda text: click.echo(text, err=True))
    results = run_simulate(config, learn, ctx.obj.get("model") if ctx.obj else None, say)
    emit(as_json, results, lambda: click.echo(simulate_table(results)))
