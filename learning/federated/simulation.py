"""Federated rounds on Flower's Simulation Engine: the same ServerApp and ClientApp as a
deployment (learning/federated/apps.py), the nodes virtual (Ray actors on this machine),
node ``i``'s data root ``NODES/node<i>``. ``learnloop federate simulate`` runs it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from learnloop.learning.federated.rounds import RESULTS_FILE, RoundFailed, RoundLog
from learnloop.learning.federated.settings import FederationSettings


def simulate_rounds(
    out: Path, nodes_dir: Path, nodes: int, settings: FederationSettings, model_path: str
) -> dict[str, Any]:
    """Run ``settings.rounds`` rounds over ``nodes`` virtual nodes; results.json's content.
    Raises RoundFailed with the failed round's reason."""
    from flwr.simulation import run_simulation

    from learnloop.learning.federated import apps

    out.mkdir(parents=True, exist_ok=True)
    settings.save(out)
    cpus = os.cpu_count() or 1
    variables = {
        apps.OUT_ENV: str(out.resolve()),
        apps.NODES_ENV: str(nodes_dir.resolve()),
        "LEARNLOOP_MODEL": model_path,  # the virtual nodes resolve the model from it
        "FLWR_HOME": str((out / "flower").resolve()),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
    }
    saved = dict(os.environ)
    os.environ.update(variables)  # Ray's workers inherit them
    try:
        run_simulation(
            server_app=apps.server_app,
            client_app=apps.client_app,
            num_supernodes=nodes,
            backend_config={
                # a node at a time per core; each trains in its own trainer child
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": cpus, "include_dashboard": False},
            },
        )
    finally:  # Ray and Flower set variables of their own (PYTHONPATH among them)
        os.environ.clear()
        os.environ.update(saved)
    results = out / RESULTS_FILE
    if not results.is_file():
        rnd, reason = RoundLog(out).stopped()
        raise RoundFailed(f"round {rnd} failed: {reason or 'the simulation ended early'}")
    value: dict[str, Any] = json.loads(results.read_text())
    return value
