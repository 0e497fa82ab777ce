"""``learnloop keys``: the API keys a server off loopback asks for."""

from __future__ import annotations

import json

import click

from learnloop.agent.cli_support import connect, emit
from learnloop.agent.report import keys_text, when


@click.group()
def keys() -> None:
    """API keys: a server listening beyond 127.0.0.1 (`serve --host 0.0.0.0`) answers only
    requests with `Authorization: Bearer KEY`; a key's NAME is the user its feedback counts
    for. A user key sees and rates only its own threads; an admin key may do everything
    (switch versions, learn, export, manage keys). With a server running, keys change
    through it and count at once."""


@keys.command("create")
@click.argument("name")
@click.option(
    "--admin",
    is_flag=True,
    help="an admin key: sees every thread and may switch versions, learn, export and "
    "manage keys [default: a user key, which sees and rates only its own threads]",
)
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@click.pass_context
def keys_create(ctx: click.Context, name: str, admin: bool, as_json: bool) -> None:
    """Make an API key for NAME and print it: this is the only time it is shown."""
    with connect(ctx) as service:
        created = service.keys_create(name, admin=admin)
    if as_json:
        click.echo(json.dumps({**created, "created_at": str(when(created["created_at"]))}))
        return
    click.echo(
        f"{created['role']} API key for {created['name']} (shown only now; only its hash is kept):",
        err=True,
    )
    click.echo(created["key"])


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of text")
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """Every key's name, when it was made and whether it was revoked (never the key)."""
    with connect(ctx) as service:
        data = service.keys_list()
    emit(as_json, data, lambda: click.echo(keys_text(data)))


@keys.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@click.pass_context
def keys_revoke(ctx: click.Context, name: str, as_json: bool) -> None:
    """Revoke NAME's key: requests with it get 401 from now on."""
    with connect(ctx) as service:
        data = service.keys_revoke(name)
    emit(as_json, data, lambda: click.echo(f"revoked the API key of {data['name']}"))
