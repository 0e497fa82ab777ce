"""The chat REPL: streaming answers, feedback and learning commands between turns.

The database is released while the REPL waits for input, so ``learnloop learn`` or
``feedback`` in another terminal can run; a version made active meanwhile is loaded
before the next answer and announced in one line.

After each piece of feedback the trigger (learning/triggers.py) may start a learning
cycle in the background; chatting goes on, and the REPL says when that cycle ended.
"""

from __future__ import annotations

import getpass
import subprocess
from collections.abc import Callable
from pathlib import Path

import click

from agent.progress import CycleProgress
from agent.report import cycle_summary, running_text
from agent.runtime import Agent, UsageError
from learning.config import LearnConfig
from learning.cycle import CycleFailed, NothingToLearn, latest_progress, run_cycle
from learning.triggers import TriggerConfig, background_log, maybe_start
from storage.store import StoreError

HELP = """commands:
  /up              the last answer was good
  /down            the last answer was bad
  /fix TEXT        TEXT is a better answer to your last message
  /regen           answer your last message again (logged as its own turn)
  /learn           run a learning cycle now (cycles also start by themselves: see
                   chat --help, --learn-after and --learn-every-minutes)
  /activate V      make version V (or base) the one that answers
  /status          model, version, feedback counts
  /new             start a new thread
  /quit            leave (Ctrl-D works too); Ctrl-C stops an answer or a /learn"""


class Repl:
    def __init__(
        self,
        agent: Agent,
        model_spec: str | None,
        thread_id: str | None,
        trigger: TriggerConfig | None = None,
    ) -> None:
        self.agent = agent
        self.trigger = trigger or TriggerConfig()
        self.background: subprocess.Popen[bytes] | None = None
        self.runs_before = 0  # runs recorded when our background cycle started
        self.model_spec = model_spec
        self.thread_id = thread_id  # None until the first answer creates the thread
        self.last_turn: int | None = None
        self.user = getpass.getuser()
        self.commands: dict[str, Callable[[str], bool | None]] = {
            "/up": lambda arg: self.rate("up"),
            "/down": lambda arg: self.rate("down"),
            "/fix": self.fix,
            "/regen": lambda arg: self.answer("", regen=True),
            "/learn": lambda arg: self.learn(),
            "/activate": self.activate,
            "/status": lambda arg: self.status(),
            "/new": lambda arg: self.new(),
            "/help": lambda arg: click.echo(HELP),
            "/quit": lambda arg: True,
            "/exit": lambda arg: True,
        }

    def run(self) -> None:
        store = self.agent.store
        history = store.thread_history(self.thread_id) if self.thread_id else []
        if history:
            self.last_turn = history[-1].id
            click.echo(f"resuming thread {self.thread_id} ({len(history)} turns):")
            for turn in history[-3:]:
                click.echo(f"  you: {turn.log.user_message}\n  bot: {turn.log.answer}")
        click.echo(
            f"learnloop chat · model {self.agent.backend.model_name} · version "
            f"{self.agent.backend.version} · thread {self.thread_id or '(new)'} · "
            "/help for commands"
        )
        store.release()
        while True:
            try:
                self.report_background()
                line = input("you> ").strip()
            except EOFError:
                click.echo()
                return
            except KeyboardInterrupt:
                click.echo()
                continue
            try:
                if self.handle(line):
                    return
            except (UsageError, StoreError) as exc:
                click.echo(f"error: {exc}", err=True)
            finally:
                store.release()

    def handle(self, line: str) -> bool:
        if not line:
            return False
        if not line.startswith("/"):
            self.answer(line)
            return False
        name, _, arg = line.partition(" ")
        command = self.commands.get(name)
        if command is None:
            raise UsageError(f"unknown command {name}; /help lists the commands")
        return bool(command(arg.strip()))

    def answer(self, text: str, regen: bool = False) -> None:
        if regen and self.last_turn is None:
            raise UsageError("nothing to regenerate yet")
        switch = self.agent.sync_version()
        if switch:
            click.echo(
                f"↻ now answering with version {switch.version} "
                f"(adapter loaded in {switch.seconds * 1000:.0f} ms)"
            )
        click.echo("bot> ", nl=False)
        answer = self.agent.ask(
            text,
            thread_id=self.thread_id,
            regen_of=self.last_turn if regen else None,
            on_token=lambda t: click.echo(t, nl=False),
        )
        self.last_turn = answer.turn_id
        self.thread_id = answer.thread_id
        suffix = " [interrupted]" if answer.interrupted else ""
        click.echo(f"{suffix}\n   [turn {answer.turn_id} · {answer.version}]")

    def _need_turn(self) -> int:
        if self.last_turn is None:
            raise UsageError("no answer to rate yet; ask something first")
        return self.last_turn

    def rate(self, rating: str) -> None:
        turn = self._need_turn()
        self.agent.store.add_feedback(turn, rating, user_name=self.user)
        click.echo(f"   noted: turn {turn} {'👍' if rating == 'up' else '👎'}")
        self.after_feedback()

    def fix(self, text: str) -> None:
        turn = self._need_turn()
        if not text:
            raise UsageError("the correction is empty: /fix followed by the better answer")
        self.agent.store.add_feedback(turn, "down", correction=text, user_name=self.user)
        click.echo(f"   noted: a better answer for turn {turn}")
        self.after_feedback()

    def after_feedback(self) -> None:
        if self.background is not None and self.background.poll() is None:
            return  # ours is still running
        self.runs_before = len(self.agent.store.runs())
        due, started = maybe_start(
            self.agent.store, self.trigger, self.model_spec, LearnConfig(), f"trigger:{self.user}"
        )
        if started is not None:
            self.background = started
            click.echo(
                f"   learning started in the background ({due.reason}); keep chatting: "
                "/status shows its progress"
            )

    def report_background(self) -> None:
        """Say once how the background cycle this chat started ended."""
        if self.background is None or self.background.poll() is None:
            return
        self.background = None
        runs = self.agent.store.runs()[self.runs_before :]
        if not runs:  # e.g. another process had started one meanwhile
            click.echo(f"   background learning did not run: see {background_log()}")
            return
        run = runs[0]
        if run.status != "succeeded" or run.version_id is None:
            click.echo(f"   background learning run {run.id} {run.status}: {run.error or ''}")
            return
        version = self.agent.store.get_version(run.version_id)
        reasons = "; ".join((version.gate or {}).get("reasons", []))
        verdict = "rejected by the gate"
        if version.status == "promoted":
            verdict = "promoted: it answers from your next message"
        click.echo(f"   background learning run {run.id}: {version.id} {verdict} ({reasons})")

    def learn(self) -> None:
        from agent.models import resolve_model

        try:
            with CycleProgress() as progress:
                result = run_cycle(
                    self.agent.store,
                    resolve_model(self.model_spec),
                    LearnConfig(),
                    progress=progress,
                    who=f"chat:{self.user}",
                )
        except (NothingToLearn, CycleFailed) as exc:
            click.echo(f"no new version: {exc}", err=True)
            return
        except KeyboardInterrupt:
            click.echo("\nlearning interrupted; the active version is unchanged", err=True)
            return
        click.echo("   " + cycle_summary(result).replace("\n", "\n   "))
        if result.promoted:
            click.echo("   it answers from your next message")
        else:
            click.echo(f"   /activate {result.version} uses it anyway")

    def activate(self, version: str) -> None:
        if not version:
            raise UsageError("/activate needs a version, e.g. /activate v2 or /activate base")
        self.agent.store.activate(version, who=f"chat:{self.user}", why="/activate in chat")
        click.echo(f"   {version} is active; it answers from your next message")

    def status(self) -> None:
        s = self.agent.store.status()
        click.echo(
            f"   model {self.agent.backend.model_name} · answering with "
            f"{self.agent.backend.version} (active: {s.active_version}) · thread "
            f"{self.thread_id or '(new)'}\n   {s.turns} turns, {s.feedback} feedback "
            f"({s.feedback_up} up, {s.feedback_down} down, {s.corrections} corrections), "
            f"{s.unlearned_feedback} not learned from yet, {s.versions} versions"
        )
        if s.running_run is not None:
            progress = latest_progress(Path(self.agent.store.run_dir_of(s.running_run)))
            click.echo(f"   learning: {running_text(s.running_run, progress)}")

    def new(self) -> None:
        self.thread_id = None
        self.last_turn = None
        click.echo("   new thread: your next message starts it")
