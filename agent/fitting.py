"""Fitting a prompt into the model's context: the oldest earlier messages are left out.

One rule for every caller (learnloop's graph, a graph of your own through
agent/logged.py, the server before it streams): never the system prompt nor the new
message; whole turns, newest first, as many as fit with room kept for the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from learnloop.storage.errors import UsageError
from learnloop.storage.records import Message


@dataclass(frozen=True)
class PromptBudget:
    """The most tokens a prompt may have, and what sets that bound (for messages)."""

    tokens: int
    by: str  # "the model's context of 1024 tokens (128 of them for the answer)"


@dataclass(frozen=True)
class Fitted:
    """A prompt that fits its budget: ``trimmed`` earlier messages were left out."""

    messages: list[Message]
    tokens: int
    budget: PromptBudget
    trimmed: int = 0

    def note(self) -> str:
        """One line for the person asking, when something was left out."""
        return (
            f"the conversation is longer than {self.budget.by} allows: its {self.trimmed} "
            f"oldest message(s) were left out of this answer's prompt ({self.tokens} tokens)"
        )


class PromptTooLong(UsageError):
    """A prompt that does not fit even with every earlier message left out."""

    def __init__(self, tokens: int, budget: PromptBudget) -> None:
        self.tokens, self.limit = tokens, budget.tokens
        super().__init__(
            f"the prompt is {tokens} tokens even without earlier messages; at most "
            f"{budget.tokens} fit, set by {budget.by}: send a shorter message"
        )


def prompt_budget(
    context_tokens: int, max_new_tokens: int, max_prompt_tokens: int | None = None
) -> PromptBudget:
    """The budget of a prompt: the model's context less the room kept for the answer, or
    the caller's own bound when that is smaller. The room kept is ``max_new_tokens``, at
    most half the context: a limit meant as "no limit" (``--max-new-tokens 100000``, an
    answer stopped by Ctrl-C) leaves room for the prompt all the same."""
    answer = min(max_new_tokens, context_tokens // 2)
    room = context_tokens - answer
    if max_prompt_tokens is not None and max_prompt_tokens < room:
        by = f"this server's `learnloop serve --max-prompt-tokens` ({max_prompt_tokens})"
        return PromptBudget(max_prompt_tokens, by)
    by = f"the model's context of {context_tokens} tokens ({answer} of them for the answer)"
    return PromptBudget(room, by)


def fit_prompt(
    messages: list[Message], count: Callable[[list[Message]], int], budget: PromptBudget
) -> Fitted:
    """``messages`` with the oldest earlier ones left out until ``count`` (the rendered
    prompt's tokens) is within ``budget``.

    Invariants: the leading system message(s) and the last message (the new one) are
    always kept; what is kept of the rest is its newest part, starting at a user message
    when there is one (whole turns, not an answer without its question); a prompt that
    does not fit with nothing else kept raises :class:`PromptTooLong`. The count is
    monotonic in the messages kept, so a binary search renders about log2(n) prompts."""
    total = count(messages)
    if total <= budget.tokens:
        return Fitted(messages, total, budget)
    head = 0
    while head < len(messages) - 1 and messages[head]["role"] == "system":
        head += 1
    fixed, middle, last = messages[:head], messages[head:-1], messages[-1:]

    def kept(start: int) -> list[Message]:
        return [*fixed, *middle[start:], *last]

    turn_starts = [i for i, m in enumerate(middle) if m["role"] == "user"]
    starts = [*(turn_starts or range(len(middle))), len(middle)]
    least = count(kept(len(middle)))
    if least > budget.tokens:
        raise PromptTooLong(least, budget)
    low, high, best = 0, len(starts) - 1, (len(middle), least)  # starts[high] fits
    while low < high:  # the first start that fits; those after it keep less
        mid = (low + high) // 2
        tokens = count(kept(starts[mid]))
        if tokens <= budget.tokens:
            high, best = mid, (starts[mid], tokens)
        else:
            low = mid + 1
    start, tokens = best
    return Fitted(kept(start), tokens, budget, trimmed=start)
