"""``learnloop bench``: the simulated user of agent/bench/simulated_user.py, as a command."""

from __future__ import annotations

import sys
from typing import Any

import click

from learnloop.agent.bench.config import BenchConfig
from learnloop.agent.cli_support import config_from, emit, model_option, quiet_libraries
from learnloop.agent.options import dataclass_options, parse_settings
from learnloop.learning.config import LearnConfig


@click.command()
@model_option
@dataclass_options(BenchConfig)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="a learning setting (a `learnloop learn` flag, with _), e.g. --set sft_epochs=3",
)
@click.option("--json", "as_json", is_flag=True, help="print results.json instead of a table")
@click.pass_context
def bench(ctx: click.Context, overrides: tuple[str, ...], as_json: bool, **values: Any) -> None:
    """Measure learning: a simulated user teaches the agent a labelled task, or a tool task
    (--tools: rows of text, answer and the calls that solve it).

    Every interaction goes through the real agent (graph, turn log, feedback, trigger,
    gate, reload). --set overrides the bench's training defaults. Example:

    \b
    learnloop bench --train ../shared/data/financial_phrasebank/train.jsonl \\
      --eval ../shared/data/financial_phrasebank/dev.jsonl \\
      --instruction "Classify the sentiment ... Answer with one word." \\
      --labels positive,negative,neutral --feedback correct --out bench-correct

    \b
    learnloop bench --tools ../shared/data/tool_arithmetic/tools.py \\
      --train ../shared/data/tool_arithmetic/train.jsonl \\
      --eval ../shared/data/tool_arithmetic/dev.jsonl \\
      --instruction "Answer the question. Use the calculate tool for arithmetic." \\
      --feedback correct --out bench-tools
    """
    from learnloop.agent.bench.simulated_user import learn_settings, run_bench
    from learnloop.agent.bench.table import bench_table
    from learnloop.storage.errors import UsageError

    quiet_libraries()
    try:
        settings = parse_settings(LearnConfig, overrides)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    mode = str(values.get("feedback") or "correct")
    tools, labels = bool(values.get("tools")), str(values.get("labels") or "")
    learn = config_from(LearnConfig, learn_settings(mode, settings, tools, labels))
    config = config_from(BenchConfig, values)
    quiet = as_json and not sys.stderr.isatty()

    def say(text: str) -> None:
        if not quiet:
            click.echo(text, err=True)

    results = run_bench(config, learn, ctx.obj["model"], say)
    emit(as_json, results, lambda: click.echo(bench_table(results)))
