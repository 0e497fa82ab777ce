"""Generation behind one small interface, so nothing else knows which engine runs.

:class:`Backend` is what the chat model, the agent and the CLI rely on: render a
prompt, stream an answer, switch the adapter version. :class:`BatchedBackend` is what
every engine shares (the tokenizer renders prompts and streams text, agent/batching.py
generates); agent/transformers_engine.py is transformers + PEFT on CPU or GPU, in fp32 or
bf16, and agent/llama_engine.py is llama.cpp.

Adapter switching: each version's adapter is loaded under its own unique name (the
version id) into the already-loaded base model with PEFT's ``load_adapter``: no reload of
the base, no restart. Answers are generated together, in one continuous batch
(agent/batching.py), each row with its own version's adapter; a switch only changes the
version that answers not pinned to one get, so it waits for no answer in progress.

Where an answer ends: at an end-of-turn token, at ``max_new_tokens`` (``truncated``), at a
stop string of the request, or at the end of its first paragraph (see
agent/stopping.py); the stop string itself is never shown, and ``stopped_by`` says
which one ended it.

Pinning: a caller that must know which version answers (the server, where a swap can
happen between a request's arrival and its turn at the model) passes a :class:`Pin`;
that version's adapter answers it, whatever was switched meanwhile.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from learnloop.agent.batching import Batcher, Decoder, Row, Stalled
from learnloop.agent.config import GenerationConfig
from learnloop.agent.stopping import StopScanner, stopped_by_limit
from learnloop.learning import chat_format
from learnloop.storage.records import Message
from learnloop.storage.store import BASE_VERSION

Tools = list[dict[str, Any]] | None  # tool schemas offered to the model (OpenAI's shape)


@dataclass(frozen=True)
class Pin:
    """Answer with this version (its adapter folder; None for the base model). A load of
    the folder must match ``checksum`` (learning/adapters.py) when one is given."""

    version: str
    adapter_path: str | None = None
    checksum: str | None = None


@dataclass
class TokenStream:
    """An answer being generated: iterate for text pieces; counts are final afterwards."""

    pieces: Iterator[str]
    prompt_tokens: int
    completion_tokens: int = 0
    interrupted: bool = False
    truncated: bool = False  # stopped by the token limit, not by an end-of-turn token
    stopped_by: str | None = None  # "stop" (a stop string) or "paragraph" (its first ended)
    version: str = BASE_VERSION  # the version that generated it, known once it starts

    def __iter__(self) -> Iterator[str]:
        return self.pieces


class Backend(Protocol):
    model_name: str
    engine: str  # what generates, in words: "transformers float32", "llama.cpp f16"
    fingerprint: str | None  # the base's weights (learning/models.py); None: unknown
    version: str
    context_tokens: int  # the most tokens the model attends to: prompt and answer together

    def render(self, messages: list[Message], tools: Tools = None, prefix: str = "") -> str:
        """The prompt text: ``messages`` with ``tools`` offered (learning/chat_format.py),
        and ``prefix``, the start of the answer the model must continue."""
        ...

    def prompt_tokens(self, messages: list[Message], tools: Tools = None) -> int:
        """How many tokens the rendered prompt of ``messages`` is (the server bounds it)."""
        ...

    def stream(
        self,
        messages: list[Message],
        config: GenerationConfig,
        pin: Pin | None = None,
        tools: Tools = None,
        prefix: str = "",
    ) -> TokenStream:
        """The answer's pieces after ``prefix`` (which the caller knows it begins with)."""
        ...

    def switch(self, version: str, adapter_path: str | None, checksum: str | None = None) -> float:
        """Make ``version`` current; return the seconds it took (0 if it already was).
        Raises AdapterDamaged, leaving the current version, when its adapter is."""
        ...

    def prepare(self, pin: Pin) -> float:
        """Load ``pin``'s version without waiting for the answer in progress and make it
        the default; return the seconds it took."""
        ...

    def ready_for_adapters(self) -> None:
        """Get ready for :meth:`prepare` to load adapters while answers run."""
        ...

    def interrupt(self) -> None:
        """Stop the answer being generated (safe to call from a signal handler)."""
        ...

    def check_room(self) -> None:
        """Raise ``Overloaded`` (a 503 with Retry-After) if an answer asked for now would
        find every place taken (agent/batching.py)."""
        ...

    def sharing_cores(self) -> contextlib.AbstractContextManager[None]:
        """While another process computes beside the answers (the trainer child)."""
        ...


class EngineBackend:
    """What every engine's backend shares. Prompts are rendered and counted with the
    Hugging Face tokenizer, whatever the engine: as training saw them, so that the same
    ids reach every engine. The adapter folder (and checksum) of every version seen is
    remembered, so that a later pin or switch may name the version alone."""

    version: str

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._paths: dict[str, str] = {}  # adapter folder of every version seen
        self._checksums: dict[str, str] = {}  # what each folder must hash to when loaded

    def render(self, messages: list[Message], tools: Tools = None, prefix: str = "") -> str:
        return chat_format.render(self.tokenizer, messages, tools) + prefix

    def prompt_tokens(self, messages: list[Message], tools: Tools = None) -> int:
        ids = self.tokenizer(self.render(messages, tools), add_special_tokens=False)
        return len(ids["input_ids"])

    def switch(self, version: str, adapter_path: str | None, checksum: str | None = None) -> float:
        """Make ``version`` the one unpinned answers get; answers in progress go on with
        theirs. The seconds returned are those spent loading its adapter."""
        if version == self.version:
            return 0.0
        return self.prepare(Pin(version, adapter_path, checksum))

    def prepare(self, pin: Pin) -> float:
        raise NotImplementedError

    def _remember(self, pin: Pin) -> None:
        if pin.adapter_path is not None:
            self._paths[pin.version] = pin.adapter_path
        if pin.checksum is not None:
            self._checksums[pin.version] = pin.checksum
        if pin.version not in self._paths:
            raise ValueError(f"version {pin.version} needs an adapter path")


class BatchedBackend(EngineBackend):
    """A backend whose answers a :class:`Batcher` generates with an engine's
    :class:`Decoder`; the engine loads adapters (:meth:`_load`, :meth:`_evict`)."""

    engine: str
    keep_adapters: int  # the most adapters kept loaded when nobody needs them
    stall_seconds: float = 120.0  # an answer whose next token takes longer fails: Stalled

    def __init__(
        self,
        tokenizer: Any,
        model_name: str,
        fingerprint: str | None,
        context_tokens: int,
        end_ids: set[int],
        *,
        max_batch: int,
        max_queue: int,
    ) -> None:
        super().__init__(tokenizer)
        self.model_name = model_name
        self.fingerprint = fingerprint
        self.context_tokens = context_tokens
        self.version = BASE_VERSION
        self._loading = threading.Lock()  # held while adapters are added or removed
        self._pending: collections.Counter[str] = collections.Counter()  # loaded, not queued
        self.batcher = Batcher(self._decoder(), end_ids, max_batch=max_batch, max_queue=max_queue)
        self.batcher.between_steps.append(self._evict)

    def _decoder(self) -> Decoder:
        raise NotImplementedError

    def _load(self, pin: Pin) -> None:
        """Load ``pin``'s adapter unless it is loaded (AdapterDamaged if it cannot be)."""
        raise NotImplementedError

    def _evict(self) -> None:
        """Bound memory between two decode steps: forget adapters nobody needs."""

    def ready_for_adapters(self) -> None:
        """Get ready for :meth:`prepare` to load adapters while answers run."""

    # -- versions ------------------------------------------------------------------------

    def prepare(self, pin: Pin) -> float:
        """Load ``pin``'s adapter while answers go on, and make it the default version: a
        swap that waits for nobody. Returns the seconds spent."""
        started = time.perf_counter()
        with self._needing(pin.version):  # not evicted between its load and the repoint
            if pin.version != BASE_VERSION:
                self._remember(pin)
                self._load(pin)
            self.version = pin.version
        return time.perf_counter() - started

    @contextlib.contextmanager
    def _needing(self, version: str) -> Iterator[None]:
        """Count ``version`` as needed (:meth:`_needed`) inside this block."""
        with self._loading:
            self._pending[version] += 1
        try:
            yield
        finally:
            with self._loading:
                self._pending[version] -= 1
                if not self._pending[version]:
                    del self._pending[version]

    def _to_forget(self, loaded: list[str]) -> list[str]:
        """Of the adapters ``loaded`` (oldest first), those to forget to keep at most
        ``keep_adapters``: the oldest that nobody needs (:meth:`_needed`). The caller
        holds ``_loading``."""
        needed = self._needed()
        spare = [name for name in loaded if name not in needed]
        return spare[: max(len(loaded) - self.keep_adapters, 0)]

    def _needed(self) -> set[str | None]:
        """Adapters that may not go: the default version's, and those of the answers
        generating, waiting or about to wait. The caller holds ``_loading``."""
        return {self.version, *self.batcher.in_use(), *self._pending}

    # -- generation ----------------------------------------------------------------------

    def interrupt(self) -> None:
        self.batcher.stop_all()

    def check_room(self) -> None:
        self.batcher.check_room()

    @contextlib.contextmanager
    def sharing_cores(self) -> Iterator[None]:
        """Compute on one thread inside this block: the trainer child, at a lower
        priority, takes the other cores' spare time, and an engine's threads, which wait
        for each other at every layer, would each wait for whichever the trainer
        preempted."""
        with self.batcher.paused():
            self._threads(1)
        try:
            yield
        finally:
            with self.batcher.paused():
                self._threads(None)

    def _threads(self, n: int | None) -> None:
        """Compute on ``n`` threads (None: as many as at the start)."""

    @property
    def load(self) -> tuple[int, int]:
        """(answers generating, answers waiting for a place in the batch)."""
        return self.batcher.load

    def stream(
        self,
        messages: list[Message],
        config: GenerationConfig,
        pin: Pin | None = None,
        tools: Tools = None,
        prefix: str = "",
    ) -> TokenStream:
        """Queue the answer now (raising :class:`~learnloop.agent.batching.Overloaded`
        when the queue is full); its pieces arrive as the batch generates them."""
        from transformers import TextIteratorStreamer

        prompt = self.render(messages, tools, prefix)
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        pin = pin or Pin(self.version)
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=self.stall_seconds
        )
        streamer.put(ids)  # the prompt: skipped, as generate's first put is
        finished = threading.Event()
        failure: list[BaseException] = []

        def finish(error: BaseException | None) -> None:
            failure.extend([error] if error is not None else [])
            streamer.end()
            finished.set()

        adapter = None if pin.version == BASE_VERSION else pin.version
        row = Row(self._on_device(ids), config, adapter, lambda t: streamer.put(_one(t)), finish)
        with self._needing(pin.version):  # until its row is queued, which counts then
            if adapter is not None:
                self._remember(pin)
                self._load(pin)
            self.batcher.submit(row)
        result = TokenStream(iter(()), prompt_tokens=int(ids.shape[1]), version=pin.version)
        result.pieces = self._pieces(row, streamer, finished, failure, result)
        return result

    def _on_device(self, ids: Any) -> Any:
        return ids

    def _pieces(
        self,
        row: Row,
        streamer: Any,
        finished: threading.Event,
        failure: list[BaseException],
        result: TokenStream,
    ) -> Iterator[str]:
        scanner = StopScanner(row.config.stop, paragraph=not row.config.whole_answer)
        try:
            for piece in streamer:  # after an ending, what was generated meanwhile is dropped
                shown = scanner.feed(piece)
                if scanner.stopped_by is not None:
                    row.stop.set()
                if shown:
                    yield shown
            rest = scanner.finish()
            if rest:
                yield rest
        except queue.Empty as stalled:  # the streamer's wait for a token timed out
            row.stop.set()
            raise Stalled(self.stall_seconds) from stalled
        except BaseException:  # the consumer stopped early: the row leaves the batch
            row.stop.set()
            raise
        finally:
            finished.wait(timeout=60)
            result.interrupted = row.stop.is_set() and scanner.stopped_by is None
            result.stopped_by = scanner.stopped_by
            result.completion_tokens = len(row.tokens)
            result.truncated = scanner.stopped_by is None and stopped_by_limit(
                row.tokens, row.config.max_new_tokens, self.batcher.end_ids
            )
        if failure:
            raise failure[0]


def context_length(config: Any, tokenizer: Any) -> int:
    """The most tokens the model attends to: its position embeddings, or its tokenizer's
    ``model_max_length`` when smaller (unset, that is a huge placeholder: ignored)."""
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    known = [int(n) for n in limits if isinstance(n, int) and 0 < n < 10**7]
    return min(known) if known else 2048


def load_tokenizer(checkpoint: str) -> Any:
    """The checkpoint's tokenizer. A local folder with a ``tokenizer.json`` loads it as the
    fast tokenizer directly: the same class AutoTokenizer would return (transformers 5),
    without resolving it through the auto mappings, which costs about 0.7 s of imports in
    a fresh process (a third of `learnloop ask`'s budget)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (Path(checkpoint) / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(checkpoint)
    return AutoTokenizer.from_pretrained(checkpoint)


def _one(token: int) -> Any:
    import torch

    return torch.tensor([token])
