"""The Flower apps: the aggregator's ServerApp and a node's ClientApp (Message API).

What crosses the wire, and nothing else: to a node, the round's global adapter (an
ArrayRecord of LoRA tensors; empty in round 1, when every node starts from the shared
seed) and a ConfigRecord (round number, the federation's learn settings, a round's
lineage); from a node, its trained adapter and a MetricRecord of numbers (examples,
training loss, CPU-seconds; after adopting, the gate's verdict and score). Raw turns and
feedback never leave the node's data root (tests/test_federated_deploy.py reads the
bytes on the wire to check).

The same apps serve a deployment (``learnloop federate serve`` / ``join``: one SuperLink,
one SuperNode per node, each its own process) and the simulation engine
(``learnloop federate simulate``). Where a run writes, and where a simulated node's data
root is, come from the run config or, under the simulation (whose run config is empty),
from the environment (:data:`OUT_ENV`, :data:`NODES_ENV`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from learnloop.learning.federated.aggregate import Adapter, Update, aggregate
from learnloop.learning.federated.environ import environment
from learnloop.learning.federated.rounds import RoundLog
from learnloop.learning.federated.settings import FederationSettings

OUT_ENV = "LEARNLOOP_FEDERATION_OUT"  # the run's folder, when the run config cannot say
NODES_ENV = "LEARNLOOP_FEDERATION_NODES"  # simulated nodes' data roots: DIR/node<i>
POLL_SECONDS = 1.0


def to_record(adapter: Adapter) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in sorted(adapter.items())})


def from_record(record: ArrayRecord) -> Adapter:
    return {name: array.numpy() for name, array in record.items()}


# --- the aggregator ----------------------------------------------------------------------

server_app = ServerApp()


@server_app.main()
def serve(grid: Grid, context: Context) -> None:
    out = Path(str(context.run_config.get("out-dir") or os.environ[OUT_ENV]))
    settings = FederationSettings.load(out)
    log = RoundLog(out)
    done, adapter = log.resume()
    for rnd in range(done + 1, settings.rounds + 1):
        adapter = one_round(grid, settings, log, rnd, adapter)
    log.finish()


def one_round(
    grid: Grid, settings: FederationSettings, log: RoundLog, rnd: int, start: Adapter | None
) -> Adapter:
    """Train, aggregate, record; then have the nodes adopt. Raises RuntimeError (the run
    fails, the rounds before stay) when too few nodes are online or answer usably."""
    began = time.monotonic()
    nodes = online(grid, settings.min_nodes, settings.wait_nodes)
    if len(nodes) < settings.needed:  # waited long enough: go on with fewer if they do
        log.fail(rnd, f"{len(nodes)} nodes online after {settings.wait_nodes:g} s, "
                 f"{settings.needed} needed")  # fmt: skip
    learn = json.dumps(settings.learn_settings)
    arrays = to_record(start or {})
    sent = arrays.count_bytes() * len(nodes)
    replies, failures = exchange(
        grid, nodes, MessageType.TRAIN, arrays, {"round": rnd, "learn": learn}, settings
    )
    updates, losses, received = [], {}, 0
    for name, reply in replies.items():
        try:
            records = reply.content.array_records["arrays"]
            updates.append(Update(name, from_record(records), int(metric(reply, "num-examples"))))
            losses[name] = metric(reply, "train-loss")
            received += records.count_bytes()
        except (KeyError, TypeError, ValueError) as exc:  # a reply not of our shape
            failures[name] = f"malformed update: {type(exc).__name__} {exc}"
    try:
        result = aggregate(updates, settings.aggregation, start)
    except ValueError as exc:
        log.fail(rnd, str(exc), failures)
    if len(result.nodes) < settings.needed:
        log.fail(rnd, f"{len(result.nodes)} usable updates of the {settings.needed} needed",
                 {**failures, **result.rejected})  # fmt: skip
    log.save(rnd, result, failures, losses, sent, received, time.monotonic() - began)
    if settings.adopt:
        lineage = {"federation": settings.name, "round": rnd, "nodes": result.nodes,
                   "aggregation": result.rule, "examples": result.examples}  # fmt: skip
        config = {"round": rnd, "learn": learn, "lineage": json.dumps(lineage)}
        verdicts, lost = exchange(
            grid, nodes, MessageType.EVALUATE, to_record(result.adapter), config, settings
        )
        log.verdicts(rnd, {n: verdict(r) for n, r in verdicts.items()}, lost)
    return result.adapter


def online(grid: Grid, want: int, wait: float) -> list[int]:
    """The nodes online once ``want`` of them are (or ``wait`` seconds have passed)."""
    deadline = time.monotonic() + wait
    while len(nodes := sorted(grid.get_node_ids())) < want and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return nodes


def exchange(
    grid: Grid,
    nodes: list[int],
    kind: str,
    arrays: ArrayRecord,
    config: dict[str, Any],
    settings: FederationSettings,
) -> tuple[dict[str, Message], dict[str, str]]:
    """Send one message to each node; (replies by node name, failures by node name). A
    node that dropped out or failed is a failure with Flower's reason, one that has not
    answered within the round timeout is one too."""
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(config)})
    timeout = settings.round_timeout
    group = str(config["round"])
    messages = [Message(content, n, kind, group_id=group, ttl=timeout) for n in nodes]
    got = list(grid.send_and_receive(messages, timeout=timeout))
    names = {m.metadata.message_id: node_label(m.metadata.dst_node_id) for m in messages}
    replies, failures = {}, {}
    for reply in got:  # by the message it answers: errors the link makes come from node 1
        name = names.get(reply.metadata.reply_to_message_id)
        if name is None:
            continue
        if reply.has_error():
            failures[name] = f"error {reply.error.code}: {reply.error.reason}"
        else:
            replies[name] = reply
    for name in names.values():
        if name not in replies and name not in failures:
            failures[name] = f"no answer within {timeout:g} s"
    return replies, failures


def node_label(node_id: int) -> str:
    return f"node-{node_id}"


def metric(message: Message, key: str) -> float:
    """A number of a reply's MetricRecord (ValueError: not a number)."""
    value = message.content.metric_records["metrics"][key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} is {value!r}, not a number")
    return float(value)


def verdict(message: Message) -> dict[str, Any]:
    """A node's verdict on a round's adapter: promoted (1) or not (0), and its score."""
    try:
        return {key: metric(message, key) for key in ("promoted", "score")}
    except (KeyError, ValueError) as exc:
        return {"malformed": str(exc)}


def setting(message: Message, key: str) -> str:
    return str(message.content.config_records["config"][key])


# --- a node ------------------------------------------------------------------------------

client_app = ClientApp()


@client_app.train()
def train(message: Message, context: Context) -> Message:
    from learnloop.learning.federated.node import train_round

    with node(context, message) as (store, model, config):
        records = message.content.array_records["arrays"]
        start = from_record(records) if len(records) else None
        trained = train_round(store, model, config, start)
    sft = trained.metrics.get("sft") or {}
    metrics = MetricRecord(
        {
            "num-examples": trained.examples,
            "train-loss": float(sft.get("train_loss") or 0.0),
            "cpu-seconds": float(trained.metrics.get("cpu_seconds") or 0.0),
        }
    )
    return Message(RecordDict({"arrays": to_record(trained.adapter), "metrics": metrics}),
                   reply_to=message)  # fmt: skip


@client_app.evaluate()
def adopt(message: Message, context: Context) -> Message:
    from learnloop.learning.federated.node import adopt_round

    with node(context, message) as (store, model, config):
        lineage = json.loads(setting(message, "lineage"))
        adapter = from_record(message.content.array_records["arrays"])
        result = adopt_round(store, model, config, adapter, lineage)
    score = (result.gate or {}).get("candidate", {}).get(config.gate_metric)
    metrics = MetricRecord(
        {"promoted": int(result.promoted), "score": float(score) if score is not None else -1.0}
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=message)


@contextmanager
def node(context: Context, message: Message) -> Iterator[tuple[Any, Any, Any]]:
    """This node's store, base model and learn settings (its own, the federation's on
    top), with ``LEARNLOOP_HOME`` pointing at its data root for the message's handling."""
    from learnloop.learning.config import LearnConfig
    from learnloop.learning.models import resolve_model
    from learnloop.storage.home import keep_private
    from learnloop.storage.store import Store

    given = context.node_config
    if "data-root" in given:  # a deployment: `learnloop federate join` said where
        root = str(given["data-root"])
    else:  # the simulation: one folder per partition
        root = os.path.join(os.environ[NODES_ENV], f"node{given['partition-id']}")
    own = json.loads(str(given.get("learn", "{}")))
    federation = json.loads(setting(message, "learn"))
    with environment({"LEARNLOOP_HOME": root}):
        keep_private()
        config = LearnConfig(**{**own, **federation})
        model = resolve_model(str(given["model"]) if given.get("model") else None, progress=False)
        with Store() as store:
            yield store, model, config
