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
- ``learnloop versions rm`` (:func:`remove`) deletes a version's folder on purpose: the
  store records that first (never the active version), then the folder goes. A removed
  version is refused wherever a version would load (:func:`trusted_checksum`), with
  one message that says its files were removed, not that they are damaged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from learnloop.learning.models import same_base
from learnloop.storage.errors import Unavailable, UsageError
from learnloop.storage.records import Version
from learnloop.storage.registry import ActiveNotRemovable, VersionRemoved
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
    checksums gets one now, once its folder passes :func:`check` (raises otherwise).
    A version whose files were removed raises VersionRemoved."""
    require_files(version)
    if version.checksum is not None:
        return version.checksum
    found = check(version.id, Path(version.adapter_path), None)
    store.record_checksum(version.id, found)
    return found


def require_files(version: Version) -> Version:
    """``version``, unless its files were removed (``versions rm``): VersionRemoved."""
    if version.removed_at is not None:
        raise VersionRemoved(version)
    return version


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` (0 when it is gone)."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def removal_targets(
    store: Store, ids: list[str], *, rejected: bool, active: str
) -> tuple[list[Version], list[str], list[dict[str, str]]]:
    """What ``versions rm IDS [--rejected]`` removes, checked before anything changes:
    (versions whose folders go, ids whose files were removed already, versions
    ``--rejected`` keeps and why). An unknown id is a NotFound, ``base`` a UsageError, the
    active version a Conflict; ``--rejected`` keeps an active rejected version instead."""
    if not ids and not rejected:
        raise UsageError("name the versions whose files to remove, or give --rejected")
    if BASE_VERSION in ids:
        raise UsageError("the base model has no adapter files to remove")
    named = [store.get_version(v) for v in dict.fromkeys(ids)]  # NotFound names the first
    if active in ids:
        raise ActiveNotRemovable(active)
    picked = {v.id: v for v in named}
    kept: list[dict[str, str]] = []
    if rejected:
        for version in store.versions():
            if version.status != "rejected" or version.id in picked:
                continue
            if version.id == active:
                kept.append({"id": version.id, "why": "it is the active version"})
            else:
                picked[version.id] = version
    # a removal cut short left files behind: a second one deletes them
    gone = [v.id for v in picked.values() if v.removed_at and not Path(v.adapter_path).exists()]
    targets = [v for v in picked.values() if v.id not in gone]
    return targets, gone, kept


def remove(store: Store, versions: list[Version]) -> None:
    """Delete the adapter folders of ``versions``, their rows kept and marked removed.
    The mark comes first and refuses the active version (a Conflict, nothing deleted);
    a deletion cut short leaves a removed version with files left over, which a second
    ``remove`` deletes."""
    store.mark_removed([v.id for v in versions])
    for version in versions:
        shutil.rmtree(version.adapter_path, ignore_errors=True)


def fall_back(
    store: Store,
    model_name: str,
    damaged: AdapterDamaged,
    *,
    skip: frozenset[str] = frozenset(),
    fingerprint: str | None = None,
) -> Version | None:
    """Activate the newest intact version on this base (``model_name``, ``fingerprint``:
    :func:`~learnloop.learning.models.same_base`) that was promoted or has been active,
    other than the damaged one, ``skip`` and removed ones, else the base; record why in
    the activation history. Returns that version (None for the base)."""
    trusted = {a.version_id for a in store.activations()}
    excluded = skip | {damaged.version}
    chosen: Version | None = None
    for version in reversed(store.versions()):  # newest first
        if version.id in excluded or version.removed_at is not None:
            continue
        if not same_base(version, model_name, fingerprint):
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
