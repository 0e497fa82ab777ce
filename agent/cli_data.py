"""``learnloop control``, ``history`` and ``export``: the learning data, read or extended
(locally, or through a running server like every command)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from learnloop.agent.cli_support import connect, emit
from learnloop.storage.errors import UsageError


@click.group()
def control() -> None:
    """The control set: prompts with known good answers that no new version may get worse
    on. learnloop ships a default set; add your own."""


@control.command("add")
@click.argument("prompt")
@click.argument("answer")
@click.option("--expect", default=None, help="text a correct answer must contain [default: ANSWER]")
@click.pass_context
def control_add(ctx: click.Context, prompt: str, answer: str, expect: str | None) -> None:
    """Add PROMPT with its good ANSWER to the control set."""
    with connect(ctx) as service:
        service.control_add(prompt, answer, expect)
    click.echo("added to the control set; the next learning cycle checks it")


@control.command("list")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of text")
@click.pass_context
def control_list(ctx: click.Context, as_json: bool) -> None:
    """Show the control set: the shipped prompts and your own."""
    with connect(ctx) as service:
        items = service.control_list()
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
@click.pass_context
def history(ctx: click.Context, as_json: bool) -> None:
    """Every switch of the active version, with who made it and why."""
    from learnloop.agent.report import history_text

    with connect(ctx) as service:
        data = service.history()
    emit(as_json, data, lambda: click.echo(history_text(data)))


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
@click.pass_context
def export(
    ctx: click.Context,
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
    from learnloop.learning.export import Export, check_format, check_out_dir, write_export

    if run_id is not None and current:
        raise UsageError("give --run N or --current, not both")
    if out_dir is None:
        raise UsageError("give --out DIR: the folder to write the export into")
    check_format(fmt)
    check_out_dir(out_dir, force)
    with connect(ctx) as service:
        data = service.export_data(run_id, current)
    # written after the store is closed: an export never holds the database
    manifest = write_export(Export(**data), out_dir, fmt)
    emit(as_json, {**manifest, "out": str(out_dir)}, lambda: _export_summary(manifest, out_dir))


def _export_summary(manifest: dict[str, Any], out_dir: Path) -> None:
    click.echo(f"exported {manifest['source']} as {manifest['format']} into {out_dir}:")
    for f in manifest["files"]:
        click.echo(f"  {f['file']:24} {f['rows']:5} rows  {f['trainer']} ({f['split']})")
    click.echo(f"  {'manifest.json':24} content hash {manifest['content_hash'][:12]}")
