"""Where a streaming answer ends: a request's stop strings, the end of its first
paragraph, or its token limit (agent/backend.py streams through these)."""

from __future__ import annotations

import re

from learnloop.agent.config import PARAGRAPH

# A paragraph is complete when it ends a sentence: . ! or ?, then closing quotes, brackets or
# markdown emphasis. A ':' announces what follows (a list, code), so it ends nothing.
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]*_]*$")
_LIST_ITEM = re.compile(r"^\s*([-*+\u2022]|\d+[.)])\s")
MIN_PARAGRAPH_WORDS = 4  # "Sure!" or "Great question." is no answer to stop at


class StopScanner:
    """Where a streaming answer must end, found as its pieces arrive.

    Two kinds of ending: a stop string (a request's ``stop``) wherever it occurs, and,
    with ``paragraph``, the blank line after a complete first paragraph: one that has at
    least :data:`MIN_PARAGRAPH_WORDS` words, ends a sentence, is not a list item and is
    not inside a code block. The answer is the text before the ending; ``stopped_by``
    names its kind ("stop" or "paragraph").

    Invariant: no character of a stop string is ever handed out. :meth:`feed` holds back
    the last ``longest stop - 1`` characters, since they may be the start of one; a stop
    string that starts in text already handed out would have been complete, and found,
    when that text was."""

    def __init__(self, stops: tuple[str, ...] | list[str], *, paragraph: bool) -> None:
        self.stops = tuple(stops)
        self.paragraph = paragraph
        longest = max([len(s) for s in self.stops] + [len(PARAGRAPH) if paragraph else 0])
        self.hold = max(longest - 1, 0)
        self.text = ""
        self.shown = 0  # characters of ``text`` handed out
        self.judged = 0  # paragraph breaks before this index were no ending
        self.stopped_by: str | None = None

    def feed(self, piece: str) -> str:
        """Take the next piece; return the text that is safe to show now."""
        if self.stopped_by is not None:
            return ""
        self.text += piece
        end = self._ending()
        if end is None:
            end = max(self.shown, len(self.text) - self.hold)
        shown, self.shown = self.text[self.shown : end], end
        return shown

    def finish(self) -> str:
        """The text held back, once the answer ended by itself (no stop string came)."""
        if self.stopped_by is not None:
            return ""
        rest, self.shown = self.text[self.shown :], len(self.text)
        return rest

    def _ending(self) -> int | None:
        found = [(i, "stop") for i in (self.text.find(s, self.shown) for s in self.stops)]
        if self.paragraph:
            found.append((self._paragraph_end(), "paragraph"))
        hits = [(i, kind) for i, kind in found if i >= 0]
        if not hits:
            return None
        end, self.stopped_by = min(hits)
        return end

    def _paragraph_end(self) -> int:
        while True:
            at = self.text.find(PARAGRAPH, max(self.judged, self.shown))
            if at < 0 or ends_paragraph(self.text[:at]):
                return at
            self.judged = at + 1


def ends_paragraph(text: str) -> bool:
    """Whether a blank line after ``text`` ends a complete first paragraph (see
    :class:`StopScanner`)."""
    body = text.rstrip()
    if len(body.split()) < MIN_PARAGRAPH_WORDS or body.count("```") % 2:
        return False
    last_line = body.splitlines()[-1]
    return not _LIST_ITEM.match(last_line) and _SENTENCE_END.search(body) is not None


def stopped_by_limit(new_ids: list[int], limit: int, end_ids: set[int]) -> bool:
    """Whether generation stopped because it used all ``limit`` tokens, not because the
    model ended its turn: the answer was cut off."""
    return len(new_ids) >= limit and bool(new_ids) and new_ids[-1] not in end_ids
