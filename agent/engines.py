"""Which engine generates answers: the one place that picks and loads a backend.

``auto`` is what measured fastest on a CPU (README, "Generation speed side by side"):
llama.cpp when llama-cpp-python is installed and the model is a GGUF (the default model
is), else transformers. Both answer through the same batcher and the same tokenizer, and
llama.cpp's F16 weights answer as the fp32 model the gate measures (README, "Engines").
``vllm`` (agent/vllm_engine.py) is for CUDA GPUs and is only used when asked for.
"""

from __future__ import annotations

import importlib.util

from learnloop.agent.backend import Backend
from learnloop.agent.config import ServingConfig
from learnloop.agent.transformers_engine import TransformersBackend
from learnloop.learning.models import ResolvedModel


def chosen(engine: str, model: ResolvedModel) -> str:
    """The engine ``engine`` names for ``model``: itself, or what ``auto`` picks."""
    if engine != "auto":
        return engine
    if model.gguf is not None and importlib.util.find_spec("llama_cpp") is not None:
        return "llama.cpp"
    return "transformers"


def load_backend(
    model: ResolvedModel, serving: ServingConfig, *, keep_adapters: int = 2
) -> Backend:
    """The backend of the engine ``serving`` asks for, with the model loaded."""
    engine = chosen(serving.engine, model)
    places = {"max_batch": serving.max_batch, "max_queue": serving.max_queue}
    if engine == "vllm":
        from learnloop.agent.vllm_engine import VllmBackend

        return VllmBackend(model, max_loras=serving.max_loras, **places)
    if engine == "llama.cpp":
        from learnloop.agent.llama_engine import LlamaBackend

        return LlamaBackend(
            model, weights=serving.llama_weights, keep_adapters=keep_adapters, **places
        )
    dtype = "bfloat16" if engine == "transformers-bf16" else "auto"
    return TransformersBackend(
        model.path,
        model.name,
        keep_adapters=keep_adapters,
        fingerprint=model.fingerprint,
        dtype=dtype,
        **places,
    )
