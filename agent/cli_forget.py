"""``learnloop forget --user NAME``: take a person's data back out.

Deletes the user's turns and feedback, retires every version trained on them (their
adapter files deleted, their rows kept with the reason), switches away from a retired
active version, and trains and gates a replacement from the feedback left
(learning/forget.py, storage/forgetting.py). Locally, or through a running server like
every command.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from learnloop.agent.cli_support import config_from, connect, emit
from learnloop.agent.options import dataclass_options, pop_config_values
from learnloop.learning.config import LearnConfig


@click.command()
@click.option("--user", "user_name", required=True, help="whose turns and feedback to delete")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@dataclass_options(LearnConfig)
@click.pass_context
def forget(ctx: click.Context, user_name: str, as_json: bool, **values: Any) -> None:
    """Forget a person (--user NAME): delete their turns and feedback, retire every
    version trained on them, and learn a replacement from the rest.

    A turn is the user's when they asked it (the API key's name, `ask --user`, `chat
    --user`); later turns of a thread they asked in go too (their prompts hold the
    user's words). The forgotten rows' text is gone from the data root afterwards: the
    database file is rewritten, and the runs that trained on them keep only their
    numbers. A running server switches away from a retired version before its next
    answer. `learnloop history` lists each forget. The replacement trains as `learnloop
    learn` does, with the learn settings given here."""
    from learnloop.agent.progress import CycleProgress

    settings = pop_config_values(LearnConfig, values)
    config_from(LearnConfig, settings)  # bad settings fail before anything is deleted
    shown = sys.stderr.isatty() or not as_json
    with connect(ctx) as service, CycleProgress(enabled=shown) as progress:
        data = service.forget(user_name, settings=settings, progress=progress)
    emit(as_json, data, lambda: click.echo(forget_text(data)))


def forget_text(data: dict[str, Any]) -> str:
    """``forget`` from its JSON (``POST /v1/forget``'s answer, completed)."""
    retired = ", ".join(data["versions_retired"]) or "none"
    lines = [
        f"forgot {data['user']}: {data['turns_deleted']} turns, "
        f"{data['feedback_deleted']} feedback rows deleted",
        f"versions retired (trained on their feedback): {retired}",
    ]
    if data["replacement"]:
        lines.append(f"replacement: {data['replacement']} ({data['replacement_verdict']})")
    elif data["versions_retired"]:
        lines.append(f"no replacement: {data['replacement_verdict']}")
    lines.append(f"active: {data['active']}  ({data['seconds']} s)")
    return "\n".join(lines)
