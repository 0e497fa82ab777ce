"""``learnloop control``, ``history`` and ``export``: the local data, read or extended.

They work on the database directly, so each refuses in one line while a server holds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from agent.cli_support import emit, open_store
from agent.client import find_server


@click.group()
def control() -> None:
    """The control set: prompts with known good answers that no new version may get worse
    on. learnloop ships a default set; add your own."""
    if (server := find_server()) is not None:
        raise server.refuse("stop it to see or change the control set")


@control.command("add")
@click.argument("prompt")
@click.argument("answer")
@click.option("--expect", default=None, help="text a correct answer must contain [default: ANSWER]")
def control_add(prompt: str, answer: str, expect: str | None) -> None:
    """Add PROMPT with its good ANSWER to the control set."""
    from agent.runtime import UsageError
    from storage.records import ControlPrompt

    if not prompt.strip() or not answer.strip() or (expect is not None and not expect.strip()):
        raise UsageError("the prompt, the answer and --expect must not be empty")
    with open_store() as store:
        store.add_control_prompt(
            ControlPrompt(prompt.strip(), answer.strip(), (expect or answer).strip())
        )
    click.echo("added to the control set; the next learning cycle checks it")


@control.command("list")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of text")
def control_list(as_json: bool) -> None:
    """Show the control set: the shipped prompts and your own."""
    from learning.snapshot import control_set

    with open_store() as store:
        items = control_set(store)
    emit(
        as_json,
        items,
        lambda: click.echo(
            "\n".join(
                f"{i['prompt']}  →  {i['answer']}  (must contain: {i['expect']})" for i in items
            )
        ),
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of text")
def history(as_json: bool) -> None:
    """Every switch of the active version, with who made it and why."""
    if (server := find_server()) is not None:
        raise server.refuse("stop it to see the history (`learnloop versions` works through it)")
    with open_store() as store:
        rows = store.activations()
    data = [{"version": a.version_id, "who": a.who, "why": a.why, "at": a.created_at} for a in rows]
    emit(
        as_json,
        data,
        lambda: click.echo(
            "\n".join(
                f"{a.created_at:%Y-%m-%d %H:%M:%S}  {a.version_id:6} {a.who:16} {a.why}"
                for a in rows
            )
            or "no switches yet: the base model has always been active"
        ),
    )


@click.command("export")
@click.option(
    "--run",
    "run_id",
    type=int,
    default=None,
    metavar="N",
    help="export learning run N's snapshot [default: the latest run that has one]",
)
@click.option(
    "--current",
    is_flag=True,
    help="export the current feedback instead, as the next `learn` with default settings "
    "would snapshot it (nothing is recorded)",
)
@click.option(
    "--format",
    "fmt",
    default="jsonl",
    show_default=True,
    metavar="jsonl|parquet",
    help="file format of the datasets",
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    metavar="DIR",
    type=click.Path(path_type=Path),
    help="folder to write into (required; new or empty)",
)
@click.option(
    "--force",
    is_flag=True,
    help="write into a non-empty folder: replaces an earlier export there, keeps other files",
)
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def export(
    run_id: int | None,
    current: bool,
    fmt: str,
    out_dir: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Write a learning snapshot as TRL conversational datasets, for use outside learnloop.

    Writes sft, dpo and kto (the datasets the run trains on, for TRL's SFTTrainer,
    DPOTrainer and KTOTrainer; empty ones are left out), heldout_pairs and heldout_fixes
    (the held-out feedback the gate judges with, never trained on) as NAME.jsonl or
    NAME.parquet, and manifest.json (source, content hash, rows, trainer per file). With
    no run recorded yet, the current feedback is exported.
    """
    from agent.runtime import UsageError
    from learning.export import ExportError, export_current, export_run, pick_run

    if run_id is not None and current:
        raise UsageError("give --run N or --current, not both")
    if out_dir is None:
        raise UsageError("give --out DIR: the folder to write the export into")
    if (server := find_server()) is not None:
        raise server.refuse("stop it to export")
    try:
        with open_store() as store:
            run = None if current else pick_run(store.runs(), run_id)
            examples = store.feedback_examples() if run is None else []
        # The store is closed before writing: an export never holds the database.
        if run is not None:
            manifest = export_run(run, out_dir, fmt, force=force)
        else:
            manifest = export_current(examples, out_dir, fmt, force=force)
    except ExportError as exc:
        raise UsageError(str(exc)) from exc
    emit(as_json, {**manifest, "out": str(out_dir)}, lambda: _export_summary(manifest, out_dir))


def _export_summary(manifest: dict[str, Any], out_dir: Path) -> None:
    click.echo(f"exported {manifest['source']} as {manifest['format']} into {out_dir}:")
    for f in manifest["files"]:
        click.echo(f"  {f['file']:24} {f['rows']:5} rows  {f['trainer']} ({f['split']})")
    click.echo(f"  {'manifest.json':24} content hash {manifest['content_hash'][:12]}")
