"""The chat use cases, and what the rest of the service stands on: the store, the model
(loaded on first need) and the settings. :class:`~learnloop.agent.service.LocalService`
is this with the learning, versions and data use cases on top."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Any

from learnloop.agent.checks import check_rating
from learnloop.agent.config import GenerationConfig, LoopLimits
from learnloop.agent.corrections import check_trajectory, final_text
from learnloop.agent.interface import OnStep, OnSwitch, OnToken
from learnloop.agent.report import answer_data
from learnloop.learning.config import LearnConfig
from learnloop.learning.toolbox import NO_TOOLS, Toolbox
from learnloop.learning.triggers import TriggerConfig
from learnloop.storage.errors import UsageError
from learnloop.storage.records import LOCAL_USER, Message
from learnloop.storage.store import Store

if TYPE_CHECKING:  # the model's modules load only when a question is asked
    from learnloop.agent.runtime import Agent
    from learnloop.learning.triggers import Due


class ChatCases:
    """Asking and rating, on this process's store and model."""

    where = "local"

    def __init__(
        self,
        store: Store,
        model_spec: str | None = None,
        *,
        generation: GenerationConfig | None = None,
        trigger: TriggerConfig | None = None,
        learn: LearnConfig | None = None,
        agent: Agent | None = None,
        toolbox: Toolbox = NO_TOOLS,
        limits: LoopLimits | None = None,
    ) -> None:
        self.store = store
        self.model_spec = model_spec
        self.toolbox = toolbox  # the operator's tools, run inside the graph
        self.limits = limits or LoopLimits()
        self.generation = generation or GenerationConfig()
        self.trigger = trigger or TriggerConfig()
        self.learn_config = learn or LearnConfig()
        self._agent = agent
        self.background: Any = None  # the cycle process our last feedback started

    @property
    def agent(self) -> Agent:
        if self._agent is None:
            from learnloop.agent.runtime import load_agent

            self._agent = load_agent(
                self.store, self.model_spec, self.generation, self.toolbox, self.limits
            )
        return self._agent

    def model_name(self) -> str:
        if self._agent is not None:
            return self._agent.backend.model_name
        from learnloop.learning.models import model_spec_from_env

        return model_spec_from_env(self.model_spec)

    # -- chat ------------------------------------------------------------------------------

    def ask(
        self,
        text: str,
        *,
        thread_id: str | None = None,
        regen_of: int | None = None,
        on_token: OnToken | None = None,
        on_switch: OnSwitch | None = None,
        on_step: OnStep | None = None,
        who: str | None = None,
    ) -> dict[str, Any]:
        agent = self.agent
        switch = agent.sync_version()
        if switch is not None and on_switch is not None:
            on_switch(switch.version, switch.seconds)
        answer = agent.ask(
            text,
            thread_id=thread_id,
            regen_of=regen_of,
            on_token=on_token,
            on_step=on_step,
            user=who,
        )
        return answer_data(answer)

    def feedback(
        self,
        turn_id: int,
        rating: str,
        *,
        correction: str | None = None,
        comment: str | None = None,
        who: str | None = None,
        correction_messages: list[Message] | None = None,
    ) -> dict[str, Any]:
        correction = check_rating(rating, correction)
        if correction_messages is not None:
            if correction is not None:
                raise UsageError("give a correction as text or as messages, not both")
            check_rating(rating, "(a trajectory)")
            self.store.get_turn(turn_id)  # an unknown turn is a 404 before any tool runs
            correction_messages = check_trajectory(
                correction_messages, self.toolbox, self.limits.tool_timeout
            )
            correction = final_text(correction_messages)
        user = who or LOCAL_USER
        # the row commits with the trigger's reads: if those find the file damaged, no row
        # is left for a retry to give twice
        with self.store.transaction():
            fid = self.store.add_feedback(
                turn_id,
                rating,
                correction=correction,
                comment=comment,
                user_name=user,
                correction_messages=correction_messages,
            )
            due = self.learning_due()
        learning = self.start_due(due, user) if due is not None else None
        return dict(feedback_id=fid, turn_id=turn_id, rating=rating, learning_started=learning)

    def learning_due(self) -> Due | None:
        """The trigger's verdict after new feedback, when a cycle is due."""
        from learnloop.learning.triggers import check

        if self.background is not None and self.background.poll() is None:
            return None  # ours is still running (it may not have recorded its run yet)
        due = check(self.store, self.trigger, self.learn_config)
        return due if due.due else None

    def start_due(self, due: Due, user: str) -> str | None:
        """Start the cycle ``due`` in the background, recorded as started by this
        process's user; return why it started."""
        from learnloop.learning.triggers import start_background

        self.store.release()
        who = f"trigger:{getpass.getuser()}"
        self.background = start_background(self.model_spec, self.learn_config, who)
        return due.reason
