"""Property-based tests of the HTTP API from its own OpenAPI document (schemathesis).

Schemathesis reads ``/openapi.json`` from a running test server and sends generated
requests, valid ones and invalid ones, to every operation it lists. Whatever arrives, the
server answers without a server error, in the content type, headers and body schema it
documents; an invalid request is a 4xx, and a 4xx adds no turn, thread, feedback or
learning run. Against a server that requires keys the same
holds with a key, and a request without the key or with a wrong one is refused.

(Driven operation by operation with ``as_strategy``: the pytest loader for lazily built
schemas, ``schemathesis.pytest.from_fixture``, does not run on pytest 9.)

Bounded in time: a few dozen examples per operation, answers of at most 8 tokens, and
a learning cycle (reachable once generated feedback names a generated turn) of one step
without the gate. ``POST /v1/learn``'s body is typed from LearnConfig, so generated
bodies carry out-of-range settings and arbitrary file paths.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
)

from learnloop.learning.config import LearnConfig
from tests.helpers import run_cli
from tests.serving import Running, running_server

QUICK_LEARN = LearnConfig(max_steps=1, gate=False)
CHECKS = [
    not_a_server_error,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# an invalid request may also be refused for its size (413)
REJECTED = ["400", "401", "403", "404", "405", "409", "413", "415", "422"]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTED}}}
)
SETTINGS = settings(
    max_examples=int(os.environ.get("LEARNLOOP_SCHEMA_EXAMPLES", "25")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
OPERATIONS = {
    "GET /healthz",
    "GET /v1/models",
    "POST /v1/chat/completions",
    "POST /v1/feedback",
    "POST /v1/learn",
    "GET /v1/learn",
    "GET /v1/learn/{run}",
    "POST /v1/learn/{run}/publish",
    "POST /v1/learn/{run}/cancel",
    "GET /v1/control",
    "POST /v1/control",
    "GET /v1/history",
    "GET /v1/export",
    "GET /v1/keys",
    "POST /v1/keys",
    "POST /v1/keys/{name}/revoke",
    "GET /v1/versions",
    "GET /v1/versions/compare",
    "POST /v1/versions/{version}/activate",
    "POST /v1/versions/remove",
    "POST /v1/rollback",
    "POST /v1/forget",
    "GET /v1/threads",
    "GET /v1/threads/{thread_id}",
    "PATCH /v1/threads/{thread_id}",
    "DELETE /v1/threads/{thread_id}",
    "GET /v1/status",
    "GET /v1/log",
    "GET /v1/dashboard",
}


def operations(schema: Any) -> list[Any]:
    found = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in found} == OPERATIONS, "a new endpoint: list it in OPERATIONS"
    return found


def fuzz(
    subtests: pytest.Subtests,
    server: Running,
    modes: tuple[GenerationMode, ...],
    checks: list[Any],
    headers: dict[str, str] | None = None,
) -> None:
    """Every operation, in each generation mode, through its own Hypothesis run (an
    operation without inputs has no invalid request). A 4xx changes nothing."""
    server.state.learn = QUICK_LEARN  # a cycle started by generated requests: one step
    # as every client sends it: the server refuses a POST without it (415), body or not
    sent = {"Content-Type": "application/json", **(headers or {})}
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", config=CONFIG)
    for operation in operations(schema):
        inputs = (operation.path_parameters, operation.query, operation.headers, operation.body)
        for mode in modes if any(len(i) for i in inputs) else (GenerationMode.POSITIVE,):
            with subtests.test(msg=f"{operation.label} ({mode.value})"):

                @SETTINGS
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:
                    before = server.counts()
                    response = case.call(headers=sent, timeout=120)
                    case.validate_response(response, checks=checks, headers=sent)
                    if 400 <= response.status_code < 500:
                        assert server.counts() == before, f"a {response.status_code} changed data"

                try:
                    run()
                except Unsatisfiable:
                    if mode is GenerationMode.POSITIVE:
                        raise  # else: no request to this operation is invalid (a free string)


def test_no_request_is_a_server_error(tiny_model_dir: Path, subtests: pytest.Subtests) -> None:
    with running_server(tiny_model_dir) as server:
        fuzz(subtests, server, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE), CHECKS)


def test_with_keys_the_key_is_required_and_enough(
    tiny_model_dir: Path, subtests: pytest.Subtests
) -> None:
    created = run_cli(None, "keys", "create", "fuzzer", "--admin")  # may call every operation
    assert created.exit_code == 0, created.output
    auth = {"Authorization": f"Bearer {created.stdout.strip()}"}
    with running_server(tiny_model_dir, require_keys=True) as server:
        fuzz(subtests, server, (GenerationMode.POSITIVE,), [*CHECKS, ignored_auth], auth)
