"""vLLM for the tests of ``--engine vllm``: the real one where ``LEARNLOOP_TEST_VLLM=real``
(a CUDA machine with vLLM installed: the GPU check of the README), else the stand-in in
tests/fake_vllm, which behaves as vLLM does where learnloop depends on it (see there)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

FAKE = Path(__file__).parent / "fake_vllm"


def use_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("LEARNLOOP_TEST_VLLM") == "real":
        return
    monkeypatch.syspath_prepend(str(FAKE))
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
