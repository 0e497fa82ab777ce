"""The transformers engine: a base model loaded once with transformers, on CPU or GPU, in
fp32 or bf16, and each version's LoRA adapter loaded into it with PEFT under its own name
(the version id), so a switch reloads nothing (agent/backend.py says how answers are
batched and pinned).

Invariants: an adapter is checked (learning/adapters.py) right before it is read, and one
that fails to load leaves nothing half-loaded; at most ``keep_adapters`` adapters stay
loaded, never evicting one an answer needs; the model is wrapped for adapters only
between two decode steps.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from learnloop.agent.backend import BatchedBackend, Pin, context_length, load_tokenizer
from learnloop.agent.batching import Decoder
from learnloop.learning.adapters import AdapterDamaged, check
from learnloop.learning.models import ModelNotFound

PLACEHOLDER = "learnloop-placeholder"  # never a version id: those are base, v1, v2, ...


class TransformersBackend(BatchedBackend):
    """transformers + PEFT: a base model loaded once, LoRA adapters swapped in by name."""

    def __init__(
        self,
        checkpoint: str,
        model_name: str,
        *,
        keep_adapters: int = 2,
        fingerprint: str | None = None,
        max_batch: int = 8,
        max_queue: int = 64,
        dtype: str = "auto",
    ) -> None:
        """``dtype``: "float32", "bfloat16", or "auto" (bf16 on a GPU, fp32 on a CPU)."""
        import torch
        from transformers import AutoModelForCausalLM

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if device == "cuda" else "float32"
        try:
            tokenizer = load_tokenizer(checkpoint)
            model: Any = AutoModelForCausalLM.from_pretrained(
                checkpoint, dtype=getattr(torch, dtype)
            )
        except OSError as exc:  # hub unreachable, missing files, not a model
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise ModelNotFound(f"cannot load model {checkpoint}: {first_line}") from exc
        self.model: Any = model.to(device)
        self.model.eval()
        self.engine = f"transformers {dtype}"
        self._start_threads = torch.get_num_threads()
        self.keep_adapters = keep_adapters
        self._loaded: list[str] = []  # adapter names in load order
        super().__init__(
            tokenizer,
            model_name,
            fingerprint,
            context_length(model.config, tokenizer),
            _end_ids(self.model, tokenizer),
            max_batch=max_batch,
            max_queue=max_queue,
        )

    def _decoder(self) -> Decoder:
        from learnloop.agent.torch_decoder import TorchDecoder

        return TorchDecoder(lambda: self.model)

    def _on_device(self, ids: Any) -> Any:
        return ids.to(self.model.device)

    def _threads(self, n: int | None) -> None:
        import torch

        torch.set_num_threads(n or self._start_threads)

    def ready_for_adapters(self) -> None:
        """Wrap the base model for adapters now, with an empty placeholder adapter (LoRA B
        is zero: the base's own output), so that every later load only adds modules.
        Wrapping replaces the layers every answer runs through, so it waits for a gap
        between two decode steps; done once, before answers start, it waits for none."""
        from peft import LoraConfig, get_peft_model

        with self.batcher.paused(), self._loading:
            if not self._is_peft():
                config = LoraConfig(r=1, init_lora_weights=True)  # the model type's targets
                self.model = get_peft_model(self.model, config, adapter_name=PLACEHOLDER)
                self.model.eval()

    def _load(self, pin: Pin) -> None:
        """Load ``pin``'s adapter unless it is loaded. Adding an adapter to a PEFT model
        adds modules the running rows do not use; the first one wraps the model, which
        waits for a gap between decode steps."""
        if self._is_peft():
            with self._loading:
                self._inject(pin.version)
        else:
            with self.batcher.paused(), self._loading:
                self._inject(pin.version)

    def _is_peft(self) -> bool:
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    def _inject(self, name: str) -> None:
        """Load adapter ``name`` under its own name (unique per version) unless loaded;
        the caller holds ``_loading``. A folder is checked (learning/adapters.py) right
        before it is read; one that is damaged, or fails to load anyway, raises
        AdapterDamaged and leaves no half-loaded adapter behind."""
        from peft import PeftModel

        is_peft = isinstance(self.model, PeftModel)
        if not is_peft or name not in self.model.peft_config:
            path = self._paths[name]
            check(name, Path(path), self._checksums.get(name))
            try:
                if is_peft:
                    self.model.load_adapter(path, adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
                    self.model.eval()
            except Exception as exc:  # the files passed the checks, yet PEFT refused them
                self._forget(name)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise AdapterDamaged(name, f"{path} does not load ({first})") from exc
        if name in self._loaded:
            self._loaded.remove(name)
        self._loaded.append(name)

    def _forget(self, name: str) -> None:
        """Drop what a failed load of adapter ``name`` may have added."""
        config = getattr(self.model, "peft_config", {})
        if name in config and name != getattr(self.model, "active_adapter", None):
            try:
                self.model.delete_adapter(name)
            except Exception:  # nothing usable was added: nothing else to undo
                config.pop(name, None)

    def _evict(self) -> None:
        """Bound memory: forget the oldest adapters beyond ``keep_adapters``, never the
        default version's nor one a row generating, waiting or about to wait needs. Run by
        the batcher between two decode steps, so no forward pass is using any of them."""
        with self._loading, warnings.catch_warnings():
            # PEFT's "Adapter vN was active which is now deleted" says nothing here: every
            # row names its own adapter, none relies on PEFT's active one
            warnings.filterwarnings("ignore", message="Adapter .* was active")
            for old in self._to_forget(self._loaded):
                self._loaded.remove(old)
                self.model.delete_adapter(old)


def _end_ids(model: Any, tokenizer: Any) -> set[int]:
    ends = model.generation_config.eos_token_id
    ids = set(ends if isinstance(ends, list) else [ends])
    return ids | {tokenizer.eos_token_id}
