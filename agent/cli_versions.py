"""``learnloop versions rm``: delete the adapter files of versions no longer wanted.

The versions' rows stay (the history of what was learned, the activation history, the
answers they gave), marked removed; ``versions`` shows them so, and activating one says
its files were removed. The active version is never removed. Locally, or through a
running server (an admin's call) like every command.
"""

from __future__ import annotations

from typing import Any

import click

from learnloop.agent.cli_support import connect, emit


@click.command("rm")
@click.argument("version_ids", metavar="[VERSION]...", nargs=-1)
@click.option("--rejected", is_flag=True, help="every version the gate rejected, too")
@click.option("--dry-run", is_flag=True, help="say what would go and its size; remove nothing")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@click.pass_context
def versions_rm(
    ctx: click.Context, version_ids: tuple[str, ...], rejected: bool, dry_run: bool, as_json: bool
) -> None:
    """Delete the adapter files of VERSION... (or of every rejected one: --rejected).

    Their rows stay, shown as removed by `learnloop versions`; the active version is
    refused (activate another first)."""
    with connect(ctx) as service:
        data = service.remove_versions(list(version_ids), rejected=rejected, dry_run=dry_run)
    emit(as_json, data, lambda: click.echo(removal_text(data)))


def size_text(n: int) -> str:
    """A byte count the way a person reads it: 0 B, 812 B, 4.2 MB, 1.1 GB."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def removal_text(data: dict[str, Any]) -> str:
    """``versions rm`` from its JSON (``POST /v1/versions/remove``'s answer)."""
    removed = data["removed"]
    listed = ", ".join(f"{r['id']} ({r['status']}, {size_text(r['bytes'])})" for r in removed)
    freed = size_text(data["bytes_freed"])
    lines = []
    if not removed:
        lines.append("no version's files to remove")
    elif data["dry_run"]:
        lines.append(f"would remove the files of {listed}: {freed} freed")
        lines.append("nothing removed (--dry-run); run without it to remove them")
    else:
        lines.append(f"removed the files of {listed}: {freed} freed")
        lines.append("their rows stay: `learnloop versions` shows them as removed")
    if data["already_removed"]:
        lines.append(f"files already removed: {', '.join(data['already_removed'])}")
    lines.extend(f"kept {k['id']}: {k['why']}" for k in data["kept"])
    return "\n".join(lines)
