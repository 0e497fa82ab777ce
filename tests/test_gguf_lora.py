"""A PEFT LoRA adapter converted to a GGUF LoRA (agent/gguf_lora.py) runs in llama.cpp
with the outputs PEFT gives.

- Adapters llama.cpp cannot apply exactly are refused with a ValueError before anything
  is written (tiny random model, real PEFT adapters).
- The real check: SmolLM2-135M with a random LoRA on all seven projections; llama.cpp's
  next-token logits with the converted adapter match torch's (PEFT, fp32), the adapter
  clearly moves them, and a conversion without the Q/K row permutation would be caught.
"""

from __future__ import annotations

import ctypes
import json
import math
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from peft import IA3Config, LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from learnloop.agent.gguf_lora import _convert, _permute, convert
from learnloop.learning.models import default_gguf_path, resolve_model

SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def save_adapter(base: Path, out: Path, config: Any, *, seed: int = 0, std: float = 0.02) -> Path:
    """A PEFT adapter over the checkpoint ``base``, with random (non-zero) LoRA B, the same
    for the same ``seed`` (A is drawn by get_peft_model)."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=std)
    peft_model.save_pretrained(out)
    return out


def base_config(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    return config


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (LoraConfig(target_modules=["q_proj", "lm_head"]), "lm_head"),
        (LoraConfig(target_modules=["q_proj", "embed_tokens"]), "embed_tokens"),
        (LoraConfig(target_modules=r".*_head"), "lm_head"),  # only the saved tensors say it
        (LoraConfig(target_modules=["q_proj"], modules_to_save=["lm_head"]), "modules_to_save"),
        (LoraConfig(target_modules=["q_proj"], use_dora=True), "DoRA"),
        (LoraConfig(target_modules=["q_proj"], lora_bias=True), "lora_B.bias"),
        (IA3Config(target_modules=["q_proj"], feedforward_modules=[]), "not LORA"),
    ],
)
def test_adapters_llama_cpp_cannot_apply_are_refused_before_writing(
    tiny_model_dir: Path, tmp_path: Path, config: Any, says: str
) -> None:
    adapter = save_adapter(tiny_model_dir, tmp_path / "adapter", config)
    target = tmp_path / "adapter.gguf"
    with pytest.raises(ValueError, match=says):
        convert(adapter, target, base_config(tiny_model_dir))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_the_file_is_what_llama_cpp_reads(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = LoraConfig(r=4, lora_alpha=8, target_modules=SEVEN, use_rslora=True)
    adapter = save_adapter(tiny_model_dir, tmp_path / "adapter", config)
    target = tmp_path / "out" / "adapter.gguf"
    target.parent.mkdir()
    assert convert(adapter, target, base_config(tiny_model_dir)) == target
    assert [p.name for p in target.parent.iterdir()] == ["adapter.gguf"]  # no .partial left

    reader = gguf.GGUFReader(target)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.architecture"] == "llama"
    assert fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora"
    # rsLoRA: llama.cpp's alpha / r must equal PEFT's lora_alpha / sqrt(r)
    assert fields["adapter.lora.alpha"] / 4 == pytest.approx(8 / math.sqrt(4))
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 * 7 * 2  # a and b, seven modules, two layers
    assert {t.tensor_type for t in reader.tensors} == {gguf.GGMLQuantizationType.F32}

    from safetensors.numpy import load_file

    peft = load_file(str(adapter / "adapter_model.safetensors"))
    prefix = "base_model.model.model.layers.1"
    a = tensors["blk.1.attn_k.weight.lora_a"]
    b = tensors["blk.1.attn_k.weight.lora_b"]
    # GGUF lists ne (fastest dimension first): A is [in, r], B is [r, out], as llama.cpp checks
    assert list(a.shape) == [64, 4] and list(b.shape) == [4, 32]
    np.testing.assert_array_equal(a.data, peft[f"{prefix}.self_attn.k_proj.lora_A.weight"])
    k_b = peft[f"{prefix}.self_attn.k_proj.lora_B.weight"]
    np.testing.assert_array_equal(b.data, _permute(k_b, 2))  # num_key_value_heads
    assert not np.array_equal(b.data, k_b)
    v_b = peft[f"{prefix}.self_attn.v_proj.lora_B.weight"]
    np.testing.assert_array_equal(tensors["blk.1.attn_v.weight.lora_b"].data, v_b)


# -- the real check: llama.cpp against torch ----------------------------------------------------


class Llama:
    """The F32 GGUF in llama.cpp (low-level API): next-token logits for a prompt, with or
    without an adapter."""

    def __init__(self, gguf_path: Path) -> None:
        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        params = L.llama_model_default_params()
        params.use_extra_bufts = False  # the AMX buffer type dies with SIGILL on our CPUs
        self.model = L.llama_model_load_from_file(str(gguf_path).encode(), params)
        assert self.model, f"llama.cpp could not load {gguf_path}"
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        context = L.llama_context_default_params()
        context.n_ctx, context.n_batch, context.n_threads, context.n_threads_batch = 512, 512, 2, 2
        self.ctx = L.llama_init_from_model(self.model, context)
        self.batch = L.llama_batch_init(512, 0, 1)
        self.adapters: list[Any] = []

    def adapter(self, path: Path) -> Any:
        adapter = self.L.llama_adapter_lora_init(self.model, str(path).encode())
        assert adapter, f"llama.cpp could not load the adapter {path}"
        self.adapters.append(adapter)
        return adapter

    def logits(self, ids: list[int], adapter: Any | None) -> np.ndarray:
        L = self.L
        if adapter is None:
            assert L.llama_set_adapters_lora(self.ctx, None, 0, None) == 0
        else:
            # the array holds llama_adapter_lora_p_ctypes (what llama_adapter_lora_init
            # returns), not llama_adapter_lora_p
            chosen = (L.llama_adapter_lora_p_ctypes * 1)(adapter)
            assert L.llama_set_adapters_lora(self.ctx, chosen, 1, (ctypes.c_float * 1)(1.0)) == 0
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        batch = self.batch
        batch.n_tokens = len(ids)
        for i, token in enumerate(ids):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, i == len(ids) - 1
        assert L.llama_decode(self.ctx, batch) == 0
        out = L.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(out, shape=(self.n_vocab,)).copy()

    def close(self) -> None:
        L = self.L
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        for adapter in self.adapters:
            L.llama_adapter_lora_free(adapter)
        L.llama_model_free(self.model)


def f32_gguf(out: Path) -> Path:
    """The default model's GGUF requantised to F32: the Q4_1 values, dequantised, as the
    fp32 torch checkpoint holds them."""
    import llama_cpp as L

    target = out / "smollm2-f32.gguf"
    params = L.llama_model_quantize_default_params()
    params.ftype = L.LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    assert (
        L.llama_model_quantize(str(default_gguf_path()).encode(), str(target).encode(), params) == 0
    )
    return target


@pytest.mark.slow
def test_llama_cpp_with_the_converted_adapter_answers_as_peft(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    base = Path(resolve_model(None, progress=False).path)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=SEVEN)
    adapter_dir = save_adapter(base, tmp_path / "adapter", config, seed=1, std=0.05)

    tokenizer = AutoTokenizer.from_pretrained(base)
    chat = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False).input_ids

    from peft import PeftModel

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter_dir
    ).eval()
    with torch.no_grad():
        torch_lora = model(torch.tensor([ids])).logits[0, -1].numpy()
        with model.disable_adapter():
            torch_base = model(torch.tensor([ids])).logits[0, -1].numpy()

    right = convert(adapter_dir, tmp_path / "right.gguf", base_config(base))
    wrong = _convert(adapter_dir, tmp_path / "wrong.gguf", base_config(base), permute=False)
    llama = Llama(f32_gguf(tmp_path))
    try:
        cpp_base = llama.logits(ids, None)
        cpp_lora = llama.logits(ids, llama.adapter(right))
        cpp_wrong = llama.logits(ids, llama.adapter(wrong))
    finally:
        llama.close()

    def gap(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.abs(x - y).max())

    # Measured (max |logit difference| over the vocabulary, 2 CPU cores): the adapter moves
    # llama.cpp's logits by 3.46 (torch's by 3.45); llama.cpp is 0.0167 from torch without
    # the adapter (F32 kernels against torch's) and 0.0196 with it (0.6% of the effect); the
    # unpermuted conversion is 3.33 away (96%). Over 3 seeds, B's std 0.02 and 0.05, with
    # and without rsLoRA: effect 1.1 to 7.9, right 0.2% to 2.1% of it, unpermuted 40% to 122%.
    effect = gap(cpp_lora, cpp_base)
    print(
        f"adapter effect {effect:.4f} (torch {gap(torch_lora, torch_base):.4f}); "
        f"llama.cpp vs torch: base {gap(cpp_base, torch_base):.5f}, "
        f"adapter {gap(cpp_lora, torch_lora):.5f}, unpermuted {gap(cpp_wrong, torch_lora):.4f}"
    )
    assert effect > 1.0  # the adapter matters: no match below comes for free
    assert gap(cpp_base, torch_base) < 0.1  # the same base weights on both sides
    assert gap(cpp_lora, torch_lora) < min(0.1, 0.05 * effect)
    assert int(cpp_lora.argmax()) == int(torch_lora.argmax())
    assert gap(cpp_wrong, torch_lora) > 0.2 * effect  # the check would catch a wrong layout
