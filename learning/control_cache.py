"""Each version's control-set scores, measured once and kept for the cycles after it.

A version never changes, so its control scores (accuracy, the good answers' log-prob per
token, its greedy answers) hold for as long as the control set, the gate's answer length
and the base model stay the same: those make the key. The cycle hands the known scores
of the active version and the base to the trainer, which then measures only the
candidate (learning/evaluate.py ``compare``), and keeps the ones measured. The file,
``runs/control-scores.json``, is a cache: losing it only costs measuring again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from learnloop.learning.config import LearnConfig
from learnloop.learning.models import ResolvedModel
from learnloop.storage.home import runs_dir

FILE = "control-scores.json"
# What a version's control scores are: the measurement's keys they are kept under.
SCORES = ("control_prompts", "control_accuracy", "control_logp_per_token", "control_answers")


def key(
    version: str, model: ResolvedModel, config: LearnConfig, control: list[dict[str, str]]
) -> str:
    base = model.fingerprint or model.name
    blob = json.dumps([base, control, config.gate_max_new_tokens], sort_keys=True).encode()
    return f"{version}:{hashlib.sha256(blob).hexdigest()[:16]}"


def known(cache_key: str) -> dict[str, Any] | None:
    scores = _read().get(cache_key)
    return scores if isinstance(scores, dict) else None


def keep(
    model: ResolvedModel,
    config: LearnConfig,
    control: list[dict[str, str]],
    measured: dict[str, dict[str, Any]],
) -> None:
    """Keep the control scores in ``measured`` ({version: one version's measurement});
    a measurement without them is skipped, a failed write ignored."""
    kept = {
        key(version, model, config, control): {k: side[k] for k in SCORES}
        for version, side in measured.items()
        if all(k in side for k in SCORES)
    }
    _write({**_read(), **kept})


def drop(versions: list[str]) -> None:
    """Forget the scores of ``versions`` (retired: their greedy answers go with them)."""
    data = _read()
    gone = [k for k in data if k.split(":", 1)[0] in versions]
    if gone:
        _write({k: v for k, v in data.items() if k not in gone})


def _write(data: dict[str, Any]) -> None:
    """Replace the file with ``data`` (complete or not at all); a failed write ignored."""
    path = _path()
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)


def _path() -> Path:
    return runs_dir() / FILE


def _read() -> dict[str, Any]:
    try:
        data = json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
