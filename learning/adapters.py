"""Adapter integrity: a checksum taken when a version is published, checked when it loads.

An adapter folder (``adapters/<version>/``) is written once and never changed, so any
difference from what was published is damage: a deleted, emptied or truncated folder, a
garbage ``adapter_config.json``, a file replaced. The one place that decides whether a
folder is intact is :func:`check`; the chat side calls it right before it loads an
adapter from disk, and :func:`fall_back` picks what answers instead.

- :func:`checksum` is sha256 over every file in the folder: its path inside the folder,
  its size and its bytes, in path order (lengths are hashed too, so no two different
  folders hash alike by moving bytes between names).
- Versions published before checksums existed have none; the first load checks their
  structure (config readable, weights complete) and records the checksum then (trust on
  first use), so from then on they are held to it like any other.
- A damaged active version never stops the agent: :func:`fall_back` activates the newest
  intact version that was promoted or has been active (or the base), and records that
  in the activation history as who ``learnloop``, why naming the damage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from learnloop.storage.errors import Unavailable
from learnloop.storage.records import Version
from learnloop.storage.store import BASE_VERSION, Store

CONFIG_FILE = "adapter_config.json"
SAFETENSORS_FILE = "adapter_model.safetensors"
BIN_FILE = "adapter_model.bin"
FALLBACK_WHO = "learnloop"
_CHUNK = 1 << 20


class AdapterDamaged(Unavailable):
    """A version's adapter folder is not what was published; ``version`` names it."""

    def __init__(self, version: str, what: str) -> None:
        super().__init__(f"the adapter of version {version} is damaged: {what}")
        self.version = version
        self.what = what


def checksum(folder: Path) -> str:
    """sha256 over the folder's files: each one's relative path, size and bytes."""
    digest = hashlib.sha256()
    for path in sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.as_posix()):
        name = path.relative_to(folder).as_posix().encode()
        digest.update(len(name).to_bytes(8, "big") + name)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def damage(folder: Path) -> str | None:
    """What is structurally wrong with an adapter folder (None: nothing found). Cheap: it
    reads the config and the weights file's header, not the weights."""
    if not folder.is_dir():
        return f"its folder {folder} is missing"
    if not any(folder.iterdir()):
        return f"its folder {folder} is empty"
    config = folder / CONFIG_FILE
    if not config.is_file():
        return f"{CONFIG_FILE} is missing from {folder}"
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{config} is not valid JSON ({type(exc).__name__})"
    if not isinstance(parsed, dict) or "peft_type" not in parsed:
        return f"{config} is not a PEFT adapter config (no peft_type)"
    weights = folder / SAFETENSORS_FILE
    if weights.is_file():
        return _safetensors_damage(weights)
    if not (folder / BIN_FILE).is_file() or (folder / BIN_FILE).stat().st_size == 0:
        return f"{folder} holds no adapter weights ({SAFETENSORS_FILE})"
    return None


def _safetensors_damage(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header naming each tensor's
    byte range, then the bytes: complete exactly when its size is where the last ends."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or 8 + length > size:
                return f"{path} is truncated ({size} bytes)"
            header = json.loads(f.read(length))
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return f"{path} is not a safetensors file"
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        return f"{path} is truncated ({size} of {expected} bytes)"
    return None


def check(version: str, folder: Path, expected: str | None) -> str:
    """Return the folder's checksum if it is intact (and equal to ``expected`` when one
    was recorded); raise AdapterDamaged naming the damage otherwise."""
    found = damage(folder)
    if found is not None:
        raise AdapterDamaged(version, found)
    try:
        actual = checksum(folder)
    except OSError as exc:
        raise AdapterDamaged(version, f"{folder} cannot be read ({exc.strerror})") from exc
    if expected is not None and actual != expected:
        raise AdapterDamaged(version, f"the files in {folder} changed since it was published")
    return actual


def trusted_checksum(store: Store, version: Version) -> str:
    """The checksum a load of ``version`` must match. A version published before
    checksums gets one now, once its folder passes :func:`check` (raises otherwise)."""
    if version.checksum is not None:
        return version.checksum
    found = check(version.id, Path(version.adapter_path), None)
    store.record_checksum(version.id, found)
    return found


def fall_back(
    store: Store, model_name: str, damaged: AdapterDamaged, *, skip: frozenset[str] = frozenset()
) -> Version | None:
    """Activate the newest intact version on ``model_name`` that was promoted or has been
    active, other than the damaged one and ``skip``, else the base; record why in the
    activation history. Returns that version (None for the base)."""
    trusted = {a.version_id for a in store.activations()}
    excluded = skip | {damaged.version}
    chosen: Version | None = None
    for version in reversed(store.versions()):  # newest first
        if version.id in excluded or version.base_model != model_name:
            continue
        if version.status != "promoted" and version.id not in trusted:
            continue
        try:
            check(version.id, Path(version.adapter_path), trusted_checksum(store, version))
        except AdapterDamaged:
            continue
        chosen = version
        break
    target = chosen.id if chosen is not None else BASE_VERSION
    store.activate(target, who=FALLBACK_WHO, why=f"fallback from {damaged.version}: {damaged.what}")
    return chosen
