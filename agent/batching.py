"""Continuous batching: one decode loop that generates every answer in progress at once.

A request joins the running batch between two decode steps: its prompt is prefilled on
its own, then it takes part in every step, which runs the model once over the last token
of every row, each row with its own adapter, and samples each row with its own settings
and random generator. A row leaves the batch as soon as it ends: an end-of-turn token,
its token limit, or its consumer's stop (a stop string found, a client gone), and its
place is free for the next.

The loop, the queue and the sampling are the same for every engine; running the model is
a :class:`Decoder`'s job (agent/torch_decoder.py: transformers with PEFT's per-row
adapters; agent/llama_engine.py: llama.cpp, a context per version).

Invariants:

- a row alone in the batch computes what ``model.generate`` computes for it: the same
  forward passes, the same logits processors in the same order, and a seeded row draws
  from its own generator exactly the numbers ``torch.manual_seed(seed)`` would give
  ``generate``; so a seeded answer is the same as before batching, and stays the same
  whoever else is in the batch, up to the floating-point effect of padding (the masked
  positions add exact zeros, but matrix products over a different batch shape may round
  differently, so a near tie between two tokens can fall either way);
- only the loop's thread calls the decoder; whoever must change modules that answers run
  through (wrapping the model for adapters) does it inside :meth:`Batcher.paused`, which
  waits for the step in progress and holds the next, so no forward pass ever sees a
  half-changed model;
- at most ``max_batch`` rows generate and ``max_queue`` wait; a request beyond that is
  refused at once with :class:`Overloaded`, never left to hang.
"""

from __future__ import annotations

import collections
import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from learnloop.agent.config import GenerationConfig
from learnloop.storage.errors import Unavailable


class Overloaded(Unavailable):
    """Every place in the batch and the queue is taken: try again after ``retry_after`` s
    (a 503 whose ``Retry-After`` header says so)."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        super().__init__(
            f"the server is busy: {waiting} requests are waiting for a place; "
            f"try again in {retry_after} s"
        )
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class Stalled(Unavailable):
    """An answer's next token did not come within ``seconds``: generation is stuck, or
    far too slow (the machine overloaded, or the process paused and resumed)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the model produced no token for {seconds:g} s (is the machine overloaded, "
            "or was this process paused?); the answer was dropped: try again"
        )


@dataclass(eq=False)
class Row:
    """One answer being generated. ``emit`` gets each new token id, then ``finish`` once
    (with the error, if generation failed); ``stop`` is set by whoever wants it to end."""

    prompt: Any  # a [1, L] tensor of token ids
    config: GenerationConfig
    adapter: str | None  # the adapter's name (its version); None: the base model
    emit: Callable[[int], None]
    finish: Callable[[BaseException | None], None]
    stop: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)  # generated so far
    ended_by_model: bool = False  # an end-of-turn token, not a limit or a stop
    _generator: Any = None
    _processors: Any = None
    cached: int = 0  # tokens of this row in the cache (prompt + generated but the last)

    @property
    def ids(self) -> Any:
        """The prompt and what was generated, as ``generate`` hands its processors."""
        import torch

        new = torch.tensor([self.tokens], dtype=self.prompt.dtype, device=self.prompt.device)
        return torch.cat([self.prompt, new], dim=1)


class Decoder(Protocol):
    """Runs the model for the batcher, only ever on its loop thread. It keeps each running
    row's key/value cache, in the order of the batcher's running rows; logits are torch
    tensors of shape [rows, vocabulary]."""

    def reserve(self, row: Row) -> bool:
        """Take room for ``row`` (leaving the queue next), or say there is none yet (it
        waits, first in line). What it took is given back by :meth:`discard` or
        :meth:`retain`."""
        ...

    def prefill(self, row: Row) -> Any:
        """The logits after ``row``'s prompt; its cache is kept aside until :meth:`admit`
        or :meth:`discard`."""
        ...

    def admit(self, row: Row) -> None:
        """The row just prefilled joins the running rows, last."""
        ...

    def discard(self, row: Row) -> None:
        """The row just prefilled (or failing to) ended at once: drop its cache."""
        ...

    def step(self, rows: list[Row]) -> Any:
        """One decode step over the last token of each running row."""
        ...

    def retain(self, rows: list[Row], keep: list[int]) -> None:
        """Of the running ``rows``, only those at ``keep`` go on."""
        ...

    def reset(self) -> None:
        """A step failed: every running row's cache is dropped."""
        ...


class Batcher:
    """The decode loop, on a daemon thread started with the first request."""

    def __init__(
        self,
        decoder: Decoder,
        end_ids: set[int],
        *,
        max_batch: int = 8,
        max_queue: int = 64,
    ) -> None:
        self.decoder = decoder
        self.end_ids = end_ids
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._step_lock = threading.Lock()  # held by the loop for each step
        self._wake = threading.Condition()
        self._pausing = 0  # callers waiting in paused(): the loop lets them in first
        self._waiting: collections.deque[Row] = collections.deque()
        self._running: list[Row] = []
        self._joining: list[Row] = []  # taken from the queue, being prefilled
        self._thread: threading.Thread | None = None
        self.peak = 0  # the most rows that ever generated together
        self.between_steps: list[Callable[[], None]] = []  # run by the loop, lock held

    # -- requests ----------------------------------------------------------------------

    def check_room(self) -> None:
        """Raise :class:`Overloaded` if a request now would find the queue full."""
        taken = len(self._waiting) + len(self._joining) + len(self._running)
        if taken >= self.max_batch + self.max_queue:
            waiting = len(self._waiting)  # about a second per batch of them ahead
            raise Overloaded(waiting, retry_after=1 + waiting // self.max_batch)

    def submit(self, row: Row) -> None:
        """Queue ``row``; raises :class:`Overloaded` when the queue is full."""
        with self._wake:
            self.check_room()
            self._waiting.append(row)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="batcher")
                self._thread.start()
            self._wake.notify()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No decode step runs inside this block; it waits for the one in progress. The
        loop yields to it before its next step (a plain lock would let the loop, which
        releases and takes it back at once, starve the caller)."""
        with self._wake:
            self._pausing += 1
        try:
            with self._step_lock:
                yield
        finally:
            with self._wake:
                self._pausing -= 1
                self._wake.notify_all()

    def stop_all(self) -> None:
        """End every answer in progress or waiting (an interrupt: Ctrl-C). Takes no lock,
        so a signal handler may call it: copying a list or deque is atomic in CPython."""
        for row in (*tuple(self._running), *tuple(self._joining), *tuple(self._waiting)):
            row.stop.set()

    def in_use(self) -> set[str | None]:
        """The adapters of the rows generating or waiting: none of them may be deleted."""
        with self._wake:
            return {row.adapter for row in [*self._running, *self._joining, *self._waiting]}

    @property
    def load(self) -> tuple[int, int]:
        """(rows generating, rows waiting)."""
        return len(self._running) + len(self._joining), len(self._waiting)

    # -- the loop ----------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        while True:
            with self._wake:
                while self._pausing or not (self._waiting or self._running):
                    self._wake.wait()
            with self._step_lock, torch.inference_mode():
                for hook in self.between_steps:  # the rows about to join are still waiting
                    hook()
                self._take_waiting()
                for row in self._joining:
                    self._guarded(self._join, row)
                self._joining = []
                if self._running:
                    self._guarded(self._step)

    def _take_waiting(self) -> None:
        """Move rows from the queue's head to ``_joining`` while there are places and the
        decoder has room for them. Only the loop takes from the queue, so the head it
        reserved for is still the head after; reserving may take time (a llama.cpp
        context is made), so it runs without holding the queue's lock."""
        room = self.max_batch - len(self._running)
        while len(self._joining) < room:
            with self._wake:
                if not self._waiting:
                    return
                head = self._waiting[0]
            if not self.decoder.reserve(head):
                return
            with self._wake:
                self._joining.append(self._waiting.popleft())

    def _guarded(self, work: Callable[..., None], *row: Row) -> None:
        """Run one prefill (of ``row``) or one step; a failure ends the rows it concerns
        (the joining one, or the whole batch, whose cache is then unusable), not the loop."""
        try:
            work(*row)
        except BaseException as exc:  # handed to each row's consumer
            failed = list(row) or self._running
            if row:
                self.decoder.discard(*row)
            else:
                with self._wake:
                    self._running = []
                self.decoder.reset()
            for each in failed:
                each.finish(exc)

    def _join(self, row: Row) -> None:
        """Prefill ``row``'s prompt alone; it joins the batch unless it ended at once."""
        if row.stop.is_set():
            self.decoder.discard(row)
            row.finish(None)
            return
        _prepare(row)
        logits = self.decoder.prefill(row)
        row.cached = int(row.prompt.shape[1])
        if not self._accept(row, logits):
            self.decoder.discard(row)
            return
        self.decoder.admit(row)
        with self._wake:
            self._running.append(row)
            self.peak = max(self.peak, len(self._running))

    def _step(self) -> None:
        """One decode step for every running row."""
        rows = self._running
        logits = self.decoder.step(rows)
        keep = []
        for i, row in enumerate(rows):
            row.cached += 1
            if self._accept(row, logits[i : i + 1]):
                keep.append(i)
        if len(keep) < len(rows):
            with self._wake:
                self._running = [rows[i] for i in keep]
            self.decoder.retain(rows, keep)

    def _accept(self, row: Row, logits: Any) -> bool:
        """Sample ``row``'s next token from ``logits`` and hand it out; False once the row
        has ended (and been finished)."""
        import torch

        if row.stop.is_set():
            row.finish(None)
            return False
        scores = logits.to(dtype=torch.float32)
        if row._processors:  # none for greedy answers: skip rebuilding the row's ids
            scores = row._processors(row.ids, scores)
        if row.config.greedy:
            token = int(torch.argmax(scores, dim=-1))
        else:
            probs = torch.nn.functional.softmax(scores, dim=-1)
            token = int(torch.multinomial(probs, num_samples=1, generator=row._generator))
        row.tokens.append(token)
        row.emit(token)
        row.ended_by_model = token in self.end_ids
        if row.ended_by_model or len(row.tokens) >= row.config.max_new_tokens or row.stop.is_set():
            row.finish(None)
            return False
        return True


def _prepare(row: Row) -> None:
    """The row's logits processors (``generate``'s, in its order, with its defaults) and
    its random generator, seeded as ``torch.manual_seed`` would seed ``generate``'s."""
    import torch
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    config = row.config
    processors = LogitsProcessorList()
    if config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if not config.greedy:
        if config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        processors.append(TopKLogitsWarper(top_k=50))  # generate's default
        if config.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=config.top_p))
    row._processors = processors
    row._generator = torch.Generator()
    seed = config.seed if config.seed >= 0 else random.getrandbits(63)
    row._generator.manual_seed(seed)
