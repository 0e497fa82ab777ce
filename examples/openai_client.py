"""The official ``openai`` client against ``learnloop serve``: chat, rate, learn, chat again.

learnloop's ``/v1/chat/completions`` is OpenAI-compatible; its answers also name the
turn they were logged as (``turn_id`` in the body and in every streamed chunk, read from
the client's ``model_extra``) and the version that wrote them (``X-Learnloop-Version``).
The example asks one question, rates the answer (``POST /v1/feedback``: 👍, or 👎 with
``--correction`` as the better answer), starts a learning cycle (``POST /v1/learn`` →
202 ``{"run"}``), follows it (``GET /v1/learn/{run}``) and, when the new version was
promoted, asks again: the server swapped to it without a restart.

    learnloop serve                                  # in another terminal
    python examples/openai_client.py --correction "The capital of Italy is Rome."
    python examples/openai_client.py --url http://HOST:8000/v1 --api-key ll-... --stream

``--url`` defaults to $LEARNLOOP_URL or http://127.0.0.1:8000/v1, ``--api-key`` to
$LEARNLOOP_API_KEY (a server on 127.0.0.1 needs none). ``--model`` is the API's model
name: ``learnloop`` (the active version), ``base`` or a version id such as ``v2``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, cast

from openai import APIConnectionError, APIStatusError, OpenAI


def chat(client: OpenAI, args: Any) -> int:
    """Ask ``args.message``; print the answer, its turn and version; return the turn id."""
    messages: Any = [{"role": "user", "content": args.message}]
    ask = {"model": args.model, "messages": messages, "max_tokens": args.max_tokens}
    if args.stream:  # every chunk names the turn and the version
        stream = client.chat.completions.create(**ask, stream=True)
        print("answer: ", end="", flush=True)
        for chunk in stream:
            extra = chunk.model_extra or {}
            turn_id, version = extra["turn_id"], extra["version"]
            print((chunk.choices[0].delta.content or "") if chunk.choices else "", end="")
    else:
        raw = client.chat.completions.with_raw_response.create(**ask)
        completion = raw.parse()
        turn_id = (completion.model_extra or {})["turn_id"]  # also X-Learnloop-Turn-Id
        version = raw.headers["X-Learnloop-Version"]
        print(f"answer: {completion.choices[0].message.content}", end="")
    print(f"\n        [turn {turn_id} · {version}]")
    return int(turn_id)


def rate(client: OpenAI, turn_id: int, correction: str | None) -> None:
    body: dict[str, Any] = {"turn_id": turn_id, "rating": "down" if correction else "up"}
    if correction:
        body["correction"] = correction
    client.post("/feedback", body=body, cast_to=object)
    print(f"rated turn {turn_id} {body['rating']}" + (" with a correction" if correction else ""))


def learn(client: OpenAI, settings: dict[str, Any]) -> dict[str, Any]:
    """Start a cycle, print each stage it reaches, return its final view."""
    started = cast(dict[str, Any], client.post("/learn", body=settings, cast_to=object))
    run = started["run"]
    print(f"learning run {run} started")
    stage = None
    while True:
        view = cast(dict[str, Any], client.get(f"/learn/{run}", cast_to=object))
        if view["stage"] != stage:
            stage = view["stage"]
            print(f"  stage: {stage}")
        if view["status"] != "running":
            return view
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default=os.environ.get("LEARNLOOP_URL", "http://127.0.0.1:8000/v1")
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("LEARNLOOP_API_KEY", "none-on-loopback")
    )
    parser.add_argument("--model", default="learnloop", help="learnloop, base or a version id")
    parser.add_argument("--message", default="What is the capital of Italy?")
    parser.add_argument("--correction", help="rate 👎 with this better answer (default: 👍)")
    parser.add_argument("--stream", action="store_true", help="stream the answers")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=None, help="cap on training steps")
    parser.add_argument("--no-gate", action="store_true", help="promote without the gate")
    args = parser.parse_args(argv)
    settings: dict[str, Any] = {"gate": False} if args.no_gate else {}
    if args.max_steps is not None:
        settings["max_steps"] = args.max_steps
    client = OpenAI(base_url=args.url, api_key=args.api_key, max_retries=0)
    try:
        rate(client, chat(client, args), args.correction)
        view = learn(client, settings)
        if view["status"] != "succeeded" or not view["promoted"]:
            print(
                f"run {view['run']} {view['status']}: {view['version'] or 'no version'} "
                f"not promoted; {'; '.join(view['reasons']) or view['error']}"
            )
            return 0 if view["status"] == "succeeded" else 1
        print(f"{view['version']} promoted; asking again")
        chat(client, args)
    except APIStatusError as exc:  # 4xx: learnloop's {"error": {"message", "type"}}
        body = exc.body if isinstance(exc.body, dict) else {}
        print(f"error {exc.status_code}: {body.get('message', exc.message)}", file=sys.stderr)
        return 1
    except APIConnectionError:
        print(f"error: no server answers at {args.url}; start `learnloop serve`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
