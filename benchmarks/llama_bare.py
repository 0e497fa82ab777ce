"""Bare llama.cpp, for :mod:`benchmarks.serve_speed`: the same prompts decoded through
llama-cpp-python's low-level API in one context with one sequence per client (llama.cpp's
own batched decoding: every step one ``llama_decode`` over the last token of each
sequence), greedy, each prompt prefilled on its own as it joins. No learnloop server, no
batcher: its own decode loop, argmax over the logits.

The weights and the adapter are the ones ``learnloop serve --engine llama.cpp`` runs: the
model's GGUF requantised to F16 (or ``--llama-weights`` f32 / bf16) by
:func:`learnloop.agent.llama_engine.serving_gguf` (the per-machine cache), and the
version's PEFT adapter converted to a GGUF LoRA by :func:`learnloop.agent.gguf_lora.convert`
(into the benchmark's output folder), applied at scale 1 with ``llama_set_adapters_lora``.

llama-cpp-python is the optional ``llama`` extra (``make setup`` builds it); without it
the bare llama.cpp engine is skipped (:func:`available`).

Invariant: the model is loaded with ``use_extra_bufts = False``. llama.cpp's AMX buffer
type dies with SIGILL (an illegal instruction) on the CPUs of perf-anchors.md, and weight
repacking brings nothing for these types.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.serve_kit import summary

WEIGHTS = ("f16", "f32", "bf16")  # as `learnloop serve --llama-weights`


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def load(
    gguf: Path, model_path: str, adapter: Path, out: Path, weights: str = "f16", max_seqs: int = 8
) -> Engine:
    """An :class:`Engine` on ``gguf`` as ``weights`` with the PEFT adapter in ``adapter``
    (a folder) converted to a GGUF LoRA in ``out``; ``model_path`` is the checkpoint folder
    whose ``config.json`` the conversion reads."""
    from learnloop.agent.gguf_lora import convert
    from learnloop.agent.llama_engine import serving_gguf

    base_config = json.loads((Path(model_path) / "config.json").read_text())
    lora = convert(adapter, out / f"{adapter.name}.lora.gguf", base_config)
    return Engine(serving_gguf(gguf, weights), lora, max_seqs=max_seqs)


class Engine:
    """One model, its LoRA adapter (or none) and one context with room for ``max_seqs``
    sequences."""

    def __init__(
        self, gguf: Path, lora: Path | None = None, max_seqs: int = 8, context: int = 4096
    ) -> None:
        import llama_cpp as L

        from learnloop.agent.llama_engine import quiet

        self.L = L
        L.llama_backend_init()
        quiet(L)
        model_params = L.llama_model_default_params()
        model_params.use_extra_bufts = False  # see the module's invariant
        self.model = L.llama_model_load_from_file(str(gguf).encode(), model_params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {gguf}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        params = L.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = context, 512, 512
        params.n_seq_max, params.kv_unified = max_seqs, True
        params.n_threads = params.n_threads_batch = os.cpu_count() or 1  # as the server
        self.ctx = L.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not make a context")
        if lora is not None:
            self.adapter = L.llama_adapter_lora_init(self.model, str(lora).encode())
            if not self.adapter:
                raise RuntimeError(f"llama.cpp could not load the LoRA {lora}")
            adapters = (L.llama_adapter_lora_p_ctypes * 1)(self.adapter)
            if L.llama_set_adapters_lora(self.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)):
                raise RuntimeError(f"llama.cpp could not apply the LoRA {lora}")
        self.memory = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(512, 0, max_seqs)

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode()
        buffer = (self.L.llama_token * (len(raw) + 8))()
        n = self.L.llama_tokenize(self.vocab, raw, len(raw), buffer, len(buffer), False, True)
        return list(buffer[:n])

    def is_end(self, token: int) -> bool:
        return bool(self.L.llama_vocab_is_eog(self.vocab, token))

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of (token, position, sequence, wants logits) entries."""
        batch = self.batch
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, logits
        if self.L.llama_decode(self.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def argmax(self, index: int) -> int:
        import numpy as np

        logits = self.L.llama_get_logits_ith(self.ctx, index)
        return int(np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).argmax())

    def text(self, tokens: list[int]) -> str:
        buffer = ctypes.create_string_buffer(256)
        parts = []
        for token in tokens:
            n = self.L.llama_token_to_piece(self.vocab, token, buffer, 256, 0, False)
            parts.append(ctypes.string_at(buffer, n))
        return b"".join(parts).decode(errors="replace")

    def generate(self, prompts: list[str], max_tokens: int) -> dict[str, Any]:
        """Greedy answers to ``prompts`` together; the serve_speed cell's figures."""
        self.L.llama_memory_clear(self.memory, True)
        started = time.perf_counter()
        ids = [self.tokenize(p) for p in prompts]
        outs: list[list[int]] = []
        first: list[float] = []
        for seq, prompt in enumerate(ids):  # each prefilled alone, as the server does
            self.decode([(t, i, seq, i == len(prompt) - 1) for i, t in enumerate(prompt)])
            outs.append([self.argmax(-1)])
            first.append(time.perf_counter())
        live = [s for s in range(len(ids)) if not self.is_end(outs[s][0])]
        ended = [first[s] for s in range(len(ids))]
        while live:
            live = [s for s in live if len(outs[s]) < max_tokens]
            if not live:
                break
            self.decode([(outs[s][-1], len(ids[s]) + len(outs[s]) - 1, s, True) for s in live])
            now = time.perf_counter()
            for i, s in enumerate(live):
                outs[s].append(self.argmax(i))
                ended[s] = now
            live = [s for s in live if not self.is_end(outs[s][-1])]
        wall = time.perf_counter() - started
        counts = [len([t for t in out if not self.is_end(t)]) for out in outs]
        per_stream = [
            (n - 1) / (end - start)
            for n, start, end in zip(counts, first, ended, strict=True)
            if n > 1 and end > start
        ]
        return {
            "requests": len(prompts),
            "failed": 0,
            "aggregate_tokens_per_s": sum(counts) / wall,
            "tokens_per_s_per_stream": summary(per_stream),
            "ttft_s": summary([f - started for f in first]),
            "prompt_tokens": max(len(p) for p in ids),
            "answers": [self.text(out) for out in outs],
        }
