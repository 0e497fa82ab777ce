"""A PEFT LoRA adapter folder as a llama.cpp GGUF LoRA file, for a Llama-architecture base.

The file is what llama.cpp's own ``convert_lora_to_gguf.py`` writes for such an adapter:
``general.type`` "adapter", ``adapter.type`` "lora", ``adapter.lora.alpha``, and per adapted
weight ``blk.{i}.{name}.weight.lora_a`` (PEFT's A, numpy shape [r, in]) and ``.lora_b``
(PEFT's B, [out, r]), in F32. Invariants:

- llama.cpp computes ``W x + (alpha / r) * B A x`` with r read from each B, so an adapter
  converted here gives the same outputs as PEFT's on the same base weights;
- llama.cpp's Llama GGUF stores the rows of Q and K permuted against Hugging Face's (its
  converter's ``LlamaModel.permute``, for its rotary embedding's layout); the rows of B for
  q_proj and k_proj are permuted the same way, A (which sees the input) is not;
- an adapter llama.cpp cannot apply exactly is refused with a ``ValueError`` before
  anything is written, and ``target`` is either complete or untouched.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import load_file

# PEFT's module name -> llama.cpp's tensor name (gguf.TENSOR_NAMES of MODEL_ARCH.LLAMA).
MODULES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_KEY = re.compile(r"base_model\.model\.model\.layers\.(\d+)\.(\w+\.\w+)\.lora_([AB])\.weight")
_ALLOWED = "LoRA on q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj and down_proj only"


def convert(adapter_dir: Path, target: Path, base_config: dict[str, Any]) -> Path:
    """Write the GGUF LoRA of the PEFT adapter in ``adapter_dir`` at ``target`` (atomically)
    and return ``target``. ``base_config`` is the base model's ``config.json``.

    Raises ``ValueError`` for an adapter llama.cpp cannot apply exactly (see :func:`_check`).
    """
    return _convert(adapter_dir, target, base_config)


def _convert(
    adapter_dir: Path, target: Path, base_config: dict[str, Any], *, permute: bool = True
) -> Path:
    # permute=False writes a deliberately wrong file: the test proves it would notice.
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    alpha = _check(config, base_config)
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    heads = {
        "attn_q": int(base_config["num_attention_heads"]),
        "attn_k": int(base_config.get("num_key_value_heads", base_config["num_attention_heads"])),
    }
    out: dict[str, np.ndarray] = {}
    for key in sorted(tensors):
        match = _KEY.fullmatch(key)
        if match is None or match[2] not in MODULES:
            raise ValueError(f"adapter tensor {key} is not supported by llama.cpp: {_ALLOWED}")
        name = MODULES[match[2]]
        value = tensors[key].astype(np.float32)
        if match[3] == "B" and name in heads and permute:
            value = _permute(value, heads[name])
        out[f"blk.{match[1]}.{name}.weight.lora_{match[3].lower()}"] = value
    if not out:
        raise ValueError(f"{adapter_dir} holds no LoRA weights")

    partial = target.with_name(target.name + ".partial")
    writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for name, value in out.items():
        writer.add_tensor(name, np.ascontiguousarray(value))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, target)
    finally:
        writer.close()  # a no-op once closed
        partial.unlink(missing_ok=True)
    return target


def _check(config: dict[str, Any], base_config: dict[str, Any]) -> float:
    """The ``adapter.lora.alpha`` that gives llama.cpp PEFT's scale, or ``ValueError``."""
    if config.get("peft_type") != "LORA":
        raise ValueError(f"adapter is {config.get('peft_type')}, not LORA: train a LoRA adapter")
    if base_config.get("model_type") != "llama":
        raise ValueError(f"base model is {base_config.get('model_type')}, not a Llama model")
    # SmolLM2 ties lm_head to embed_tokens; a saved copy would need tensors llama.cpp lacks.
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    if config.get("modules_to_save") or any(re.search("lm_head|embed_tokens", t) for t in targets):
        raise ValueError(f"adapter trains lm_head, embed_tokens or modules_to_save: {_ALLOWED}")
    if config.get("use_dora"):
        raise ValueError("DoRA adapters (use_dora) cannot run in llama.cpp: train without use_dora")
    if config.get("alpha_pattern"):
        raise ValueError("per-module lora_alpha (alpha_pattern) cannot run in llama.cpp: drop it")
    alpha, rank = float(config["lora_alpha"]), int(config["r"])
    if alpha == 0:  # llama.cpp reads alpha 0 as "no scaling", PEFT as a zero scale
        raise ValueError("lora_alpha is 0: the adapter does nothing; set a non-zero lora_alpha")
    if config.get("use_rslora"):
        # PEFT scales by alpha / sqrt(r), llama.cpp by alpha / r with r from each tensor.
        if config.get("rank_pattern"):
            raise ValueError("rsLoRA with per-module ranks (rank_pattern): drop one of them")
        return alpha * math.sqrt(rank)
    return alpha


def _permute(b: np.ndarray, n_head: int) -> np.ndarray:
    """B's rows in llama.cpp's Q/K order (``LlamaModel.permute`` of convert_hf_to_gguf.py)."""
    head_half = b.shape[0] // n_head // 2
    return b.reshape(n_head, 2, head_half, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)
