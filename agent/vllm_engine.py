"""The vLLM engine (``serve --engine vllm``, for GPUs): vLLM's ``AsyncLLM`` generates, with
its own continuous batching and multi-LoRA (``--max-loras`` adapters on the GPU at once);
learnloop renders and tokenises prompts as for every engine (the same ids reach vLLM) and
ends answers by the same rules (agent/stopping.py).

vLLM runs its asyncio engine on a thread of its own here (:class:`_Loop`); the server's
threads submit requests to it and read the text from a queue per answer.

Invariants:

- Every adapter vLLM is given has its own ``lora_int_id``, never reused. vLLM caches
  adapters by that id ("lora_int_id must be globally unique for a given adapter. This is
  currently not enforced in vLLM", LoRARequest's docstring): an id given again with other
  files answers with the old weights, a stale adapter. An id belongs to one version, one
  folder and one checksum; new files, even under a version name seen before, get a new id.
- An answer pinned to a version gets that version's adapter, whatever is switched while
  it waits or generates.
- An adapter folder is checked (learning/adapters.py) before vLLM is asked to read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from learnloop.agent.backend import (
    EngineBackend,
    Pin,
    TokenStream,
    context_length,
    load_tokenizer,
)
from learnloop.agent.batching import Overloaded, Stalled
from learnloop.agent.config import GenerationConfig
from learnloop.agent.stopping import StopScanner
from learnloop.learning.adapters import check
from learnloop.learning.models import ModelNotFound, ResolvedModel
from learnloop.storage.records import Message
from learnloop.storage.store import BASE_VERSION

T = TypeVar("T")
INSTALL = (
    "the vllm engine needs vLLM and a CUDA GPU: `pip install vllm` on a machine with one "
    "(or choose --engine transformers / llama.cpp)"
)


class _Loop:
    """An asyncio event loop running on a daemon thread, for vLLM's engine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="learnloop-vllm")
        self.thread.daemon = True
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def submit(self, work: Coroutine[Any, Any, Any]) -> None:
        asyncio.run_coroutine_threadsafe(work, self.loop)


class VllmBackend(EngineBackend):
    """vLLM's AsyncLLM behind learnloop's Backend interface (agent/backend.py)."""

    stall_seconds: float = 120.0  # an answer whose next text takes longer fails: Stalled

    def __init__(
        self,
        model: ResolvedModel,
        *,
        max_batch: int = 8,
        max_queue: int = 64,
        max_loras: int = 4,
        max_lora_rank: int = 64,
    ) -> None:
        try:
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise ModelNotFound(INSTALL) from exc
        from transformers import AutoConfig

        checkpoint = str(model.path)
        tokenizer = load_tokenizer(checkpoint)
        super().__init__(tokenizer)
        self.model_name = model.name
        self.fingerprint = model.fingerprint
        self.version = BASE_VERSION
        self.context_tokens = context_length(AutoConfig.from_pretrained(checkpoint), tokenizer)
        self.max_batch, self.max_queue = max_batch, max_queue
        args = AsyncEngineArgs(
            model=checkpoint,
            tokenizer=checkpoint,
            dtype="bfloat16",
            enable_lora=True,
            max_loras=max_loras,
            max_lora_rank=max_lora_rank,
            max_num_seqs=max_batch,
            max_model_len=self.context_tokens,
        )
        self._loop = _Loop()
        self._engine: Any = self._loop.run(_started(AsyncLLM, args))
        self.engine = f"vllm bfloat16, {max_loras} adapters on the GPU"
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str, str | None], int] = {}  # (version, folder, checksum)
        self._next_id = itertools.count(1)
        self._in_flight: set[str] = set()  # request ids generating or waiting

    # -- versions ------------------------------------------------------------------------

    def prepare(self, pin: Pin) -> float:
        """Load ``pin``'s adapter into vLLM (answers go on meanwhile) and make it the
        version unpinned answers get."""
        started = time.perf_counter()
        request = self._lora(pin)
        if request is not None:
            self._loop.run(self._engine.add_lora(request))
        self.version = pin.version
        return time.perf_counter() - started

    def _lora(self, pin: Pin) -> Any:
        """The LoRARequest of ``pin``'s version (None: the base), its folder checked."""
        from vllm.lora.request import LoRARequest

        if pin.version == BASE_VERSION:
            return None
        self._remember(pin)
        path, checksum = self._paths[pin.version], self._checksums.get(pin.version)
        check(pin.version, Path(path), checksum)
        with self._lock:
            key = (pin.version, path, checksum)
            if key not in self._ids:
                self._ids[key] = next(self._next_id)
            lora_id = self._ids[key]
        return LoRARequest(f"{pin.version}#{lora_id}", lora_id, path)

    def ready_for_adapters(self) -> None:
        """Nothing to do: vLLM was started with LoRA enabled."""

    # -- generation ----------------------------------------------------------------------

    @property
    def load(self) -> tuple[int, int]:
        """(answers generating, answers waiting), as vLLM's scheduler would place them."""
        with self._lock:
            n = len(self._in_flight)
        return min(n, self.max_batch), max(n - self.max_batch, 0)

    def check_room(self) -> None:
        with self._lock:
            self._room(len(self._in_flight))

    def _room(self, n: int) -> None:
        """Overloaded when ``n`` answers fill every place (the caller holds ``_lock``)."""
        if n >= self.max_batch + self.max_queue:
            raise Overloaded(max(n - self.max_batch, 0), retry_after=1)

    def interrupt(self) -> None:
        with self._lock:
            ids = list(self._in_flight)
        if ids:
            self._loop.submit(self._engine.abort(ids))

    @contextlib.contextmanager
    def sharing_cores(self) -> Iterator[None]:
        """The GPU computes; a trainer child beside it takes no core from vLLM's."""
        yield

    def stream(
        self,
        messages: list[Message],
        config: GenerationConfig,
        pin: Pin | None = None,
        tools: Any = None,
        prefix: str = "",
    ) -> TokenStream:
        prompt = self.render(messages, tools, prefix)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        pin = pin or Pin(self.version)
        lora = self._lora(pin)
        request_id = uuid.uuid4().hex
        with self._lock:
            self._room(len(self._in_flight))
            self._in_flight.add(request_id)
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._loop.submit(self._generate(request_id, ids, _sampling(config), lora, events))
        result = TokenStream(iter(()), prompt_tokens=len(ids), version=pin.version)
        result.pieces = self._pieces(request_id, config, events, result)
        return result

    async def _generate(
        self, request_id: str, ids: list[int], params: Any, lora: Any, events: queue.Queue[Any]
    ) -> None:
        """Run one request in vLLM; put ("text", new text), then ("end", (token ids,
        finish reason)) or ("error", exception) on ``events``."""
        try:
            sent, last = "", None
            prompt = {"prompt_token_ids": ids}
            async for output in self._engine.generate(
                prompt, params, request_id, lora_request=lora
            ):
                last = output.outputs[0]
                if len(last.text) > len(sent):
                    events.put(("text", (last.text[len(sent) :], len(last.token_ids))))
                    sent = last.text
            token_ids = list(last.token_ids) if last is not None else []
            events.put(("end", (token_ids, getattr(last, "finish_reason", None))))
        except BaseException as exc:  # handed to the reader, which raises it
            events.put(("error", exc))
        finally:
            with self._lock:
                self._in_flight.discard(request_id)

    def _pieces(
        self,
        request_id: str,
        config: GenerationConfig,
        events: queue.Queue[tuple[str, Any]],
        result: TokenStream,
    ) -> Iterator[str]:
        scanner = StopScanner(config.stop, paragraph=not config.whole_answer)
        finished = False
        try:
            while True:
                try:
                    kind, value = events.get(timeout=self.stall_seconds)
                except queue.Empty as stalled:
                    raise Stalled(self.stall_seconds) from stalled
                if kind == "error" and not isinstance(value, asyncio.CancelledError):
                    finished = True
                    raise value
                if kind != "text":  # the end, or vLLM's task cancelled by an abort
                    finished = True
                    token_ids, reason = value if kind == "end" else ([], "abort")
                    result.completion_tokens = len(token_ids) or result.completion_tokens
                    result.truncated = reason == "length"
                    result.interrupted = reason == "abort"
                    break
                text, result.completion_tokens = value
                shown = scanner.feed(text)
                if shown:
                    yield shown
                if scanner.stopped_by is not None:
                    break
            rest = scanner.finish()
            if rest:
                yield rest
            result.stopped_by = scanner.stopped_by
        finally:
            if not finished:  # a stop rule ended it, or the reader left: vLLM stops too
                self._loop.submit(self._engine.abort(request_id))


async def _started(engine_class: Any, args: Any) -> Any:
    """The engine, made on the loop's thread (it binds its background tasks to it)."""
    return engine_class.from_engine_args(args)


def _sampling(config: GenerationConfig) -> Any:
    from vllm import SamplingParams

    greedy = config.greedy
    return SamplingParams(
        max_tokens=config.max_new_tokens,
        temperature=0.0 if greedy else config.temperature,
        top_p=1.0 if greedy else config.top_p,
        repetition_penalty=config.repetition_penalty,
        seed=None if config.seed < 0 else config.seed,
        skip_special_tokens=True,
    )
