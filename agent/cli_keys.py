"""``learnloop keys``: the API keys a server off loopback asks for."""

from __future__ import annotations

import json
from typing import Any

import click

from agent.cli_support import emit, open_store


@click.group()
def keys() -> None:
    """API keys: a server listening beyond 127.0.0.1 (`serve --host 0.0.0.0`) answers only
    requests with `Authorization: Bearer KEY`; a key's NAME is the user its feedback counts
    for. Change keys while the server is stopped: they count from its next start."""


def _keys_store() -> Any:
    """The store, unless a live server holds it (even one not answering yet: it may be
    starting, with the database already open)."""
    from agent.runtime import UsageError
    from agent.server.run import server_file
    from learning.cycle import pid_alive

    try:
        running = json.loads(server_file().read_text())
    except (OSError, ValueError):
        running = None
    if isinstance(running, dict) and pid_alive(running.get("pid")):
        raise UsageError(
            f"a server ({running.get('url')}, pid {running['pid']}) holds the database: "
            "stop it, change the keys, start it again"
        )
    return open_store()


@keys.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
def keys_create(name: str, as_json: bool) -> None:
    """Make an API key for NAME and print it: this is the only time it is shown."""
    with _keys_store() as store:
        record, key = store.create_api_key(name)
    if as_json:
        created = str(record.created_at)
        click.echo(json.dumps({"name": record.name, "key": key, "created_at": created}))
        return
    click.echo(f"API key for {record.name} (shown only now; only its hash is kept):", err=True)
    click.echo(key)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of text")
def keys_list(as_json: bool) -> None:
    """Every key's name, when it was made and whether it was revoked (never the key)."""
    with _keys_store() as store:
        rows = store.api_keys()
    data = [{"name": k.name, "created_at": k.created_at, "revoked_at": k.revoked_at} for k in rows]
    emit(
        as_json,
        data,
        lambda: click.echo(
            "\n".join(
                f"{k.name:24} created {k.created_at:%Y-%m-%d %H:%M:%S}"
                + (f"  revoked {k.revoked_at:%Y-%m-%d %H:%M:%S}" if k.revoked_at else "  valid")
                for k in rows
            )
            or "no API keys: `learnloop keys create NAME` makes one"
        ),
    )


@keys.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
def keys_revoke(name: str, as_json: bool) -> None:
    """Revoke NAME's key: requests with it get 401 from the server's next start."""
    with _keys_store() as store:
        record = store.revoke_api_key(name)
    emit(
        as_json,
        {"name": record.name, "revoked_at": record.revoked_at},
        lambda: click.echo(f"revoked the API key of {record.name}"),
    )
