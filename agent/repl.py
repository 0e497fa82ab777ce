"""The chat REPL: streaming answers, feedback and learning commands between turns.

The REPL talks to a :class:`~learnloop.agent.interface.Service`: the local one (this
process holds the store and the model) or, while a server runs for the data root, the
server. Locally the database is released while the REPL waits for input, so
``learnloop learn`` or ``feedback`` in another terminal can run; a version made active
meanwhile answers next, announced in one line.

After each piece of feedback the trigger may start a learning cycle in the background;
chatting goes on, and the REPL says once how that cycle ended.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

import click

from learnloop.agent.cli_support import show_step
from learnloop.agent.interface import Service
from learnloop.agent.progress import CycleProgress
from learnloop.agent.report import cycle_summary, running_text
from learnloop.learning.cycle import Cancelled, CycleFailed, NothingToLearn
from learnloop.storage.errors import LearnloopError, UsageError
from learnloop.storage.records import LOCAL_USER

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
    def __init__(self, service: Service, thread_id: str | None, who: str = LOCAL_USER) -> None:
        self.service = service
        self.thread_id = thread_id  # None until the first answer creates the thread
        self.who = who  # whose turns and feedback these are (chat --user)
        self.last_turn: int | None = None
        self.version: str | None = None  # the version that gave the last answer
        self.watching: int | None = None  # runs known when a background cycle started
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
        self.service.prepare()
        history = self.service.thread(self.thread_id)["turns"] if self.thread_id else []
        if history:
            self.last_turn = history[-1]["turn_id"]
            click.echo(f"resuming thread {self.thread_id} ({len(history)} turns):")
            for turn in history[-3:]:
                click.echo(f"  you: {turn['user_message']}\n  bot: {turn['answer']}")
        status = self.service.status()
        self.version = status["active_version"]
        where = "" if self.service.where == "local" else f" · through {self.service.where}"
        click.echo(
            f"learnloop chat · model {status['model']} · version {self.version} · thread "
            f"{self.thread_id or '(new)'}{where} · /help for commands"
        )
        while True:
            try:
                self.report_background()
                self.service.idle()  # the database is free while we wait for input
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
            except LearnloopError as exc:
                click.echo(f"error: {exc}", err=True)
            finally:
                self.service.idle()

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
        started = False

        def show(piece: str) -> None:
            nonlocal started
            if not started:
                click.echo("bot> ", nl=False)
                started = True
            click.echo(piece, nl=False)

        def step(event: dict[str, Any]) -> None:
            nonlocal started
            if started:  # a call after some text: the call goes on a line of its own
                click.echo()
                started = False
            show_step(event)

        answer = self.service.ask(
            text,
            thread_id=self.thread_id,
            regen_of=self.last_turn if regen else None,
            on_token=show,
            on_switch=self.switched,
            on_step=step,
            who=self.who,
        )
        if not started:
            click.echo("bot> ", nl=False)
        self.last_turn = answer["turn_id"]
        self.thread_id = answer["thread_id"]
        self.version = answer["version"]
        suffix = " [interrupted]" if answer.get("interrupted") else ""
        click.echo(f"{suffix}\n   [turn {answer['turn_id']} · {answer['version']}]")

    @staticmethod
    def switched(version: str, seconds: float | None) -> None:
        loaded = f" (adapter loaded in {seconds * 1000:.0f} ms)" if seconds is not None else ""
        click.echo(f"↻ now answering with version {version}{loaded}")

    def _need_turn(self) -> int:
        if self.last_turn is None:
            raise UsageError("no answer to rate yet; ask something first")
        return self.last_turn

    def rate(self, rating: str) -> None:
        turn = self._need_turn()
        started = self.give(turn, rating, None)
        click.echo(f"   noted: turn {turn} {'👍' if rating == 'up' else '👎'}")
        self.say_started(started)

    def fix(self, text: str) -> None:
        turn = self._need_turn()
        if not text:
            raise UsageError("the correction is empty: /fix followed by the better answer")
        started = self.give(turn, "down", text)
        click.echo(f"   noted: a better answer for turn {turn}")
        self.say_started(started)

    def give(self, turn: int, rating: str, correction: str | None) -> str | None:
        """Send the feedback; if it started a cycle, watch for the run that records.
        Returns why a cycle started, or None."""
        runs_before = len(self.service.runs()) if self.watching is None else self.watching
        data = self.service.feedback(turn, rating, correction=correction, who=self.who)
        started: str | None = data.get("learning_started")
        if started:
            self.watching = runs_before
        return started

    @staticmethod
    def say_started(reason: str | None) -> None:
        if reason:
            click.echo(
                f"   learning started in the background ({reason}); keep chatting: "
                "/status shows its progress"
            )

    def report_background(self) -> None:
        """Say once how the background cycle this chat's feedback started ended."""
        if self.watching is None:
            return
        runs = self.service.runs()[self.watching :]
        if not runs or runs[0]["status"] == "running":
            return  # not recorded yet, or still going
        self.watching = None
        run = runs[0]
        if run["status"] != "succeeded" or run["version"] is None:
            click.echo(f"   background learning run {run['run']} {run['status']}: "
                       f"{run['error'] or ''}")  # fmt: skip
            return
        verdict = run.get("summary") or ("promoted" if run["promoted"] else "not promoted")
        after = "; it answers from your next message" if run["promoted"] else ""
        click.echo(f"   background learning run {run['run']}: {run['version']} {verdict}{after}")

    def learn(self) -> None:
        try:
            with CycleProgress() as progress:
                result = self.service.learn({}, progress=progress, who=f"chat:{self.user}")
        except (NothingToLearn, CycleFailed, Cancelled) as exc:
            click.echo(f"no new version: {exc}", err=True)
            return
        except KeyboardInterrupt:
            click.echo("\nlearning interrupted; the active version is unchanged", err=True)
            return
        click.echo("   " + cycle_summary(result).replace("\n", "\n   "))
        if result["promoted"]:
            click.echo("   it answers from your next message")
        else:
            click.echo(f"   /activate {result['version']} uses it anyway")

    def activate(self, version: str) -> None:
        if not version:
            raise UsageError("/activate needs a version, e.g. /activate v2 or /activate base")
        self.service.activate(version, why="/activate in chat", who=f"chat:{self.user}")
        click.echo(f"   {version} is active; it answers from your next message")

    def status(self) -> None:
        s = self.service.status()
        click.echo(
            f"   model {s['model']} · answering with {self.version} (active: "
            f"{s['active_version']}) · thread {self.thread_id or '(new)'}\n   {s['turns']} "
            f"turns, {s['feedback']} feedback ({s['feedback_up']} up, {s['feedback_down']} "
            f"down, {s['corrections']} corrections), {s['unlearned_feedback']} not learned "
            f"from yet, {s['versions']} versions"
        )
        if s["running_run"] is not None:
            click.echo(f"   learning: {running_text(s['running_run'], s['learning'])}")

    def new(self) -> None:
        self.thread_id = None
        self.last_turn = None
        click.echo("   new thread: your next message starts it")
