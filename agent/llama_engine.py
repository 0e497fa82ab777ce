"""llama.cpp as the engine (``--engine llama.cpp``): the base's GGUF in llama.cpp, each
version's LoRA adapter converted to a GGUF LoRA (agent/gguf_lora.py), answers generated
by the same continuous batch as transformers' (agent/batching.py).

- Weights: the model's GGUF requantised once per machine into the cache as F16, F32 or
  BF16 (``weights``): the values the trainer and the gate use (the Q4_1 file's,
  dequantised: F32 exactly, F16 rounded to 11 bits, BF16 to 8); Q4_1 or Q8_0 kernels
  quantise the activations too, and their greedy answers part from the gate's after a
  few words.
- One llama.cpp context for every answer, with a key/value cache shared by up to
  ``max_batch`` sequences. Each version's adapter is loaded once beside the model
  (llama.cpp keeps the model's weights as they are and adds the LoRA at each layer), and
  a decode step runs one ``llama_decode`` per version with rows, with that version's
  adapter set on the context. Setting another adapter makes llama.cpp plan its compute
  graph again (about 13 ms here), which only steps with several versions pay: rows are
  grouped by version, the one already set first. A swap loads the new adapter while
  answers go on (convert, then ``llama_adapter_lora_init``); nothing else changes, so
  memory does not grow with the versions served.
- The batcher samples every row as with transformers (its own settings, seed and
  generator), from logits copied out of llama.cpp.
- A row reserves its prompt and its token limit in the context's cache when it leaves the
  queue (:meth:`LlamaDecoder.reserve`); one that does not fit yet waits for rows to end.

Sampling runs in torch on one thread: its vocabulary-sized operations (sorting 49,152
logits for top-p) gain little from a second thread, and torch's threads wait for each
other inside every operation, so whenever a core is taken (by llama.cpp's own threads
between steps, by the trainer child during a cycle) each one would wait for the other.

Invariant: the model is loaded with ``use_extra_bufts = False``: llama.cpp's AMX buffer
type dies with SIGILL on Intel CPUs with AMX (../shared/reference/perf-anchors.md), and
its weight repacking brings nothing for F16 and F32.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any

from learnloop.agent.backend import BatchedBackend, Pin, load_tokenizer
from learnloop.agent.batching import Decoder, Row
from learnloop.learning.adapters import AdapterDamaged, check, checksum
from learnloop.learning.models import ModelNotFound, ResolvedModel
from learnloop.storage.home import cache_dir, model_cache_dir

WEIGHTS = {
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "f32": "LLAMA_FTYPE_ALL_F32",
    "bf16": "LLAMA_FTYPE_MOSTLY_BF16",
}
PREFILL_CHUNK = 512  # tokens per llama_decode of a prompt (the context's n_batch)


def llama() -> Any:
    """llama-cpp-python's low-level bindings, or a message saying how to install them."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise ModelNotFound(
            "the llama.cpp engine needs llama-cpp-python: `make setup` builds it (the llama "
            "extra, about 5 minutes), or use --engine transformers"
        ) from exc
    return llama_cpp


def serving_gguf(source: Path, weights: str) -> Path:
    """``source`` requantised to ``weights`` in the per-machine cache, once (written under
    a temporary name and renamed into place: complete or absent)."""
    from learnloop.learning.models import file_digest

    L = llama()
    target = cache_dir(model_cache_dir()) / f"{file_digest(source)}.{weights}.gguf"
    if target.is_file():
        return target
    params = L.llama_model_quantize_default_params()
    params.ftype = getattr(L, WEIGHTS[weights])
    params.allow_requantize = True  # from Q4_1: dequantised, then written as F16 / F32
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    if L.llama_model_quantize(str(source).encode(), str(partial).encode(), params) != 0:
        partial.unlink(missing_ok=True)
        raise ModelNotFound(f"llama.cpp could not convert {source} to {weights}")
    os.replace(partial, target)
    return target


class Context:
    """The llama.cpp context: a key/value cache of ``cells`` tokens shared by up to
    ``seqs`` sequences, and the adapter its next decode runs with."""

    def __init__(self, L: Any, model: Any, cells: int, seqs: int) -> None:
        self.L = L
        params = L.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = cells, PREFILL_CHUNK, PREFILL_CHUNK
        params.n_seq_max, params.kv_unified = seqs, True
        params.n_threads = params.n_threads_batch = os.cpu_count() or 1
        params.no_perf = True
        self.ctx = L.llama_init_from_model(model, params)
        if not self.ctx:
            raise MemoryError("llama.cpp could not make a context (out of memory?)")
        self.memory = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(max(PREFILL_CHUNK, seqs), 0, 1)
        self.cells = cells
        self.free_seqs = list(range(seqs))
        self.reserved = 0  # cells promised to the rows that hold a sequence
        self.adapter: Any = None  # the llama_adapter_lora set; None: the base model

    def use(self, adapter: Any) -> None:
        """Run the next decodes with ``adapter`` (None: the base model)."""
        if adapter is self.adapter:
            return
        if adapter is None:
            self.L.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            adapters = (self.L.llama_adapter_lora_p_ctypes * 1)(adapter)
            self.L.llama_set_adapters_lora(self.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
        self.adapter = adapter

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of (token, position, sequence, wants logits) entries."""
        batch = self.batch
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, logits
        status = self.L.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed (status {status})")

    def logits(self, vocab: int, positions: list[int], into: Any, rows: list[int]) -> None:
        """Copy the logits at these batch positions of the last decode into those rows of
        ``into``, a [n, vocab] float32 tensor (its own memory: one copy, from llama.cpp's
        buffer)."""
        import numpy as np

        target = into.numpy()
        for position, row in zip(positions, rows, strict=True):
            pointer = self.L.llama_get_logits_ith(self.ctx, position)
            target[row] = np.ctypeslib.as_array(pointer, shape=(vocab,))

    def close(self) -> None:
        self.L.llama_batch_free(self.batch)
        self.L.llama_free(self.ctx)


class LlamaDecoder:
    """The batcher's decoder over the backend's context.

    Invariant: a row holds a sequence of the context from :meth:`reserve` until it is
    discarded or leaves in :meth:`retain` (or every row goes, in :meth:`reset`), and the
    sequence's cache cells are cleared when it is given back."""

    def __init__(self, backend: LlamaBackend) -> None:
        self.backend = backend
        self._seats: dict[Row, tuple[int, int]] = {}  # row -> (sequence, cells reserved)

    def reserve(self, row: Row) -> bool:
        context = self.backend.context
        need = min(int(row.prompt.shape[1]) + row.config.max_new_tokens, context.cells)
        if not context.free_seqs or context.reserved + need > context.cells:
            return False
        context.reserved += need
        self._seats[row] = (context.free_seqs.pop(0), need)
        return True

    def prefill(self, row: Row) -> Any:
        context, (seq, _) = self.backend.context, self._seats[row]
        context.use(self.backend.adapter(row.adapter))
        ids = row.prompt[0].tolist()
        for start in range(0, len(ids), PREFILL_CHUNK):
            chunk = ids[start : start + PREFILL_CHUNK]
            final = start + len(chunk) == len(ids)
            context.decode(
                [(t, start + i, seq, final and i == len(chunk) - 1) for i, t in enumerate(chunk)]
            )
        import torch

        last = (len(ids) - 1) % PREFILL_CHUNK  # the last token's place in the last chunk
        out = torch.empty((1, self.backend.vocab), dtype=torch.float32)
        context.logits(self.backend.vocab, [last], out, [0])
        return out

    def admit(self, row: Row) -> None:
        pass  # its sequence is in the context's cache already

    def discard(self, row: Row) -> None:
        self._leave(row)

    def step(self, rows: list[Row]) -> Any:
        import torch

        context = self.backend.context
        groups: dict[str | None, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(row.adapter, []).append(i)
        adapters = {version: self.backend.adapter(version) for version in groups}
        out = torch.empty((len(rows), self.backend.vocab), dtype=torch.float32)
        for version in sorted(groups, key=lambda v: adapters[v] is not context.adapter):
            members = groups[version]  # the adapter set already goes first: one change less
            context.use(adapters[version])
            context.decode(
                [
                    (rows[i].tokens[-1], rows[i].cached, self._seats[rows[i]][0], True)
                    for i in members
                ]
            )
            context.logits(self.backend.vocab, list(range(len(members))), out, members)
        return out

    def retain(self, rows: list[Row], keep: list[int]) -> None:
        kept = set(keep)
        for i, row in enumerate(rows):
            if i not in kept:
                self._leave(row)

    def reset(self) -> None:
        for row in list(self._seats):
            self._leave(row)

    def _leave(self, row: Row) -> None:
        seat = self._seats.pop(row, None)
        if seat is None:
            return
        context, (seq, need) = self.backend.context, seat
        context.L.llama_memory_seq_rm(context.memory, seq, -1, -1)
        context.free_seqs.append(seq)
        context.reserved -= need


class LlamaBackend(BatchedBackend):
    """llama.cpp on a GGUF model: contexts per version, adapters converted on first load."""

    def __init__(
        self,
        model: ResolvedModel,
        *,
        weights: str = "f16",
        keep_adapters: int = 2,
        max_batch: int = 8,
        max_queue: int = 64,
        cells: int | None = None,
    ) -> None:
        """``cells``: each context's key/value cache, in tokens for all its sequences
        together [default: the model's context, at least 2048]: an answer waits for room
        when the prompts and token limits of those running would not fit beside it."""
        import torch

        if model.gguf is None:
            raise ModelNotFound(
                f"the llama.cpp engine runs GGUF models; {model.spec} is a checkpoint folder "
                "or hub id (convert it with llama.cpp's convert_hf_to_gguf.py, or use "
                "--engine transformers)"
            )
        self.engine = f"llama.cpp {weights}"
        torch.set_num_threads(1)  # see the module's note on sampling
        L = self.L = llama()
        L.llama_backend_init()
        quiet(L)
        params = L.llama_model_default_params()
        params.use_extra_bufts = False  # see the module's invariant
        gguf = serving_gguf(Path(model.gguf), weights)
        self.model = L.llama_model_load_from_file(str(gguf).encode(), params)
        if not self.model:
            raise ModelNotFound(f"llama.cpp could not load {gguf}")
        self.vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.base_config = json.loads((Path(model.path) / "config.json").read_text())
        tokenizer = load_tokenizer(model.path)
        context = min(int(L.llama_model_n_ctx_train(self.model)), 8192)
        self.keep_adapters = keep_adapters
        self._adapters: dict[str, Any] = {}  # version -> llama_adapter_lora, in load order
        self.context = Context(L, self.model, cells or max(context, 2048), max_batch)
        super().__init__(
            tokenizer,
            model.name,
            model.fingerprint,
            context,
            {tokenizer.eos_token_id, *_end_ids(model.path)},
            max_batch=max_batch,
            max_queue=max_queue,
        )

    def _decoder(self) -> Decoder:
        return LlamaDecoder(self)

    def _threads(self, n: int | None) -> None:
        n = n or os.cpu_count() or 1
        self.L.llama_set_n_threads(self.context.ctx, n, n)

    def adapter(self, version: str | None) -> Any:
        """The loaded llama.cpp adapter of ``version`` (None: the base model). A version's
        adapter is loaded before any row of it is queued, and kept while one is."""
        return None if version is None else self._adapters[version]

    def _load(self, pin: Pin) -> None:
        """Convert the version's adapter (once per machine, named by its checksum) and
        load it into llama.cpp, while answers go on."""
        name = pin.version
        with self._loading:
            if name in self._adapters:
                self._adapters[name] = self._adapters.pop(name)  # most recently used last
                return
            path = Path(self._paths[name])
            check(name, path, self._checksums.get(name))
            lora = self._converted(name, path)
            adapter = self.L.llama_adapter_lora_init(self.model, str(lora).encode())
            if not adapter:
                raise AdapterDamaged(name, f"llama.cpp could not load {lora}")
            self._adapters[name] = adapter

    def _converted(self, name: str, path: Path) -> Path:
        from learnloop.agent.gguf_lora import convert

        target = cache_dir(model_cache_dir() / "lora") / f"{checksum(path)}.gguf"
        if not target.is_file():
            try:
                convert(path, target, self.base_config)
            except ValueError as exc:
                raise AdapterDamaged(name, f"llama.cpp cannot run it: {exc}") from exc
        return target

    def _evict(self) -> None:
        """Forget the oldest adapters beyond ``keep_adapters`` that nobody needs. Run by
        the batcher between two steps, so no decode is using any of them."""
        with self._loading:
            for name in self._to_forget(list(self._adapters)):
                adapter = self._adapters.pop(name)
                if self.context.adapter is adapter:
                    self.context.use(None)
                self.L.llama_adapter_lora_free(adapter)


def _end_ids(checkpoint: str) -> set[int]:
    """The end-of-turn ids of the checkpoint's generation config (as transformers ends)."""
    path = Path(checkpoint) / "generation_config.json"
    if not path.is_file():
        return set()
    ends = json.loads(path.read_text()).get("eos_token_id")
    return set(ends if isinstance(ends, list) else [] if ends is None else [ends])


_QUIET: list[Any] = []  # the log callback, kept alive as long as llama.cpp may call it


def quiet(L: Any) -> None:
    """Keep llama.cpp's log lines (one per tensor loaded, per graph planned) out of the
    server's output; its errors still reach the caller as failed calls."""
    if not _QUIET:
        _QUIET.append(L.llama_log_callback(lambda level, text, data: None))
        L.llama_log_set(_QUIET[0], L.ctypes.c_void_p())
