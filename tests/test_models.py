"""The base model: converted once per machine, and known by its weights, not its folder.

- The default GGUF is converted into the per-machine cache ($LEARNLOOP_CACHE), shared by
  every data root; two data roots converting it at the same moment both get it, and one
  folder results (real conversions of the real GGUF, in two processes).
- A data root converted by an older learnloop keeps its copy: it is moved into the cache
  instead of converted again, or removed once the cache has the model.
- A version trained on a model in folder A is on the same base as the same files copied
  to folder B (it answers there, and is the next cycle's parent); other weights under
  the same folder name are another base.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from learnloop.learning.models import (
    FINGERPRINT_FILE,
    SOURCE_FILE,
    checkpoint_fingerprint,
    default_gguf_path,
    legacy_dir,
    resolve_model,
)
from tests.helpers import run_cli, run_json

FAST = ("--max-new-tokens", "4")
LEARN = ("--max-steps", "1", "--gate", "false")
RESOLVE = (
    "import json\n"
    "from learnloop.learning.models import resolve_model\n"
    "r = resolve_model(None, progress=False)\n"
    "print(json.dumps({'path': r.path, 'fingerprint': r.fingerprint}))\n"
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_two_data_roots_converting_at_once_get_one_shared_conversion(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    children = []
    for name in ("first", "second"):
        env = {**os.environ, "LEARNLOOP_HOME": str(tmp_path / name), "LEARNLOOP_CACHE": str(cache)}
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", RESOLVE],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    gguf = default_gguf_path()
    digest = sha256(gguf)  # the folder is named by the GGUF's content
    assert (
        results[0] == results[1] == {"path": str(cache / "models" / digest), "fingerprint": digest}
    )
    folders = [p.name for p in (cache / "models").iterdir() if p.is_dir()]
    assert folders == [digest]  # one conversion, no temporary folder left behind
    converted = cache / "models" / digest
    assert (converted / "model.safetensors").stat().st_size > 400e6  # fp32, ~538 MB
    assert (converted / FINGERPRINT_FILE).read_text().strip() == digest
    for name in ("first", "second"):
        assert not (tmp_path / name / "models").exists()  # nothing per data root


def test_an_old_data_roots_conversion_is_moved_into_the_cache_not_redone(
    tmp_path: Path, home: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("LEARNLOOP_CACHE", str(cache))
    gguf = default_gguf_path()
    # what learnloop before the cache left in a data root (here the tiny model stands in
    # for the 538 MB conversion: were it converted again, the real model would appear)
    old = legacy_dir(gguf)
    shutil.copytree(tiny_model_dir, old)
    (old / SOURCE_FILE).write_text(f"converted from {gguf} in 9.9 s\n")

    resolved = resolve_model(None, progress=False)

    moved = cache / "models" / sha256(gguf)
    assert resolved.path == str(moved) and resolved.fingerprint == sha256(gguf)
    assert not old.exists() and not old.parent.exists()  # the root's models/ is gone too
    assert (moved / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()

    # another old data root, once the cache has the model: its copy is removed
    monkeypatch.setenv("LEARNLOOP_HOME", str(tmp_path / "older-root"))
    other = legacy_dir(gguf)
    shutil.copytree(tiny_model_dir, other)
    (other / SOURCE_FILE).write_text("converted\n")
    assert resolve_model(None, progress=False).path == str(moved)
    assert not other.exists()


def test_the_same_weights_in_another_folder_are_the_same_base(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    first = tmp_path / "a" / "tiny-llama"
    copy = tmp_path / "b" / "renamed-copy"
    shutil.copytree(tiny_model_dir, first)
    shutil.copytree(tiny_model_dir, copy)
    turn = run_json(first, "ask", "What is 2 + 2?", *FAST)
    assert (
        run_cli(first, "feedback", str(turn["turn_id"]), "down", "--correction", "4").exit_code == 0
    )
    assert run_json(first, "learn", *LEARN)["version"] == "v1"

    # the copy under another name: v1 answers, and the next cycle is measured against it
    again = run_json(copy, "ask", "What is 2 + 2?", *FAST)
    assert again["version"] == "v1"
    assert run_cli(copy, "feedback", str(again["turn_id"]), "up").exit_code == 0
    assert run_json(copy, "learn", *LEARN)["version"] == "v2"
    listed = {v["id"]: v for v in run_json(copy, "versions")}
    assert listed["v2"]["parent"] == "v1"
    assert listed["v1"]["base_fingerprint"] == listed["v2"]["base_fingerprint"]
    assert listed["v1"]["base_fingerprint"] == checkpoint_fingerprint(copy)


def test_other_weights_under_the_same_folder_name_are_another_base(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    first = tmp_path / "a" / "tiny-llama"
    shutil.copytree(tiny_model_dir, first)
    turn = run_json(first, "ask", "Say hi", *FAST)
    assert (
        run_cli(first, "feedback", str(turn["turn_id"]), "down", "--correction", "hi").exit_code
        == 0
    )
    assert run_json(first, "learn", *LEARN)["version"] == "v1"

    other = tmp_path / "b" / "tiny-llama"  # the same name, other weights
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01)
    model.save_pretrained(other)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, other / name)
    assert checkpoint_fingerprint(other) != checkpoint_fingerprint(first)

    refused = run_cli(other, "ask", "Say hi", *FAST)
    assert refused.exit_code == 1
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "trained on another model called tiny-llama (other weights)" in message, message


def test_a_fingerprint_is_computed_once_and_follows_the_files(
    tmp_path: Path, tiny_model_dir: Path, machine_cache: Path
) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    before = (
        set((machine_cache / "digests").glob("*"))
        if (machine_cache / "digests").exists()
        else set()
    )
    first = checkpoint_fingerprint(folder)
    memo = set((machine_cache / "digests").glob("*")) - before
    assert len(memo) == 1 and memo.pop().read_text().strip() == first
    assert checkpoint_fingerprint(folder) == first
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rope_theta": 1234.0}))
    assert checkpoint_fingerprint(folder) != first  # another model now
