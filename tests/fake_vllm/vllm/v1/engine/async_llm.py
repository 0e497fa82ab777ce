"""``AsyncLLM`` as vLLM 0.34 shows it to a caller (see vllm/__init__.py here)."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import torch

from vllm import AsyncEngineArgs
from vllm.lora.request import LoRARequest
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import SamplingParams


class AsyncLLM:
    def __init__(self, args: AsyncEngineArgs) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.args = args
        self.tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
        self.model: Any = AutoModelForCausalLM.from_pretrained(args.model).eval()
        self.ends = {self.tokenizer.eos_token_id, self.model.generation_config.eos_token_id}
        self.loaded: dict[int, str] = {}  # lora_int_id -> the path it was loaded from
        self.aborted: set[str] = set()
        self.requests_seen: list[tuple[str, int | None]] = []  # (request id, lora id)

    @classmethod
    def from_engine_args(cls, engine_args: AsyncEngineArgs) -> "AsyncLLM":
        asyncio.get_running_loop()  # as vLLM's: made where its loop runs
        return cls(engine_args)

    async def add_lora(self, lora_request: LoRARequest) -> bool:
        self._load(lora_request)
        return True

    async def abort(self, request_id: Any, internal: bool = False) -> None:
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        self.aborted.update(ids)

    def _load(self, lora: LoRARequest) -> str:
        """The adapter's name in the PEFT model; loaded only if its id is new (vLLM's
        cache: an id reused with other files keeps the old weights)."""
        from peft import PeftModel

        name = f"lora{lora.lora_int_id}"
        if lora.lora_int_id not in self.loaded:
            if not isinstance(self.model, PeftModel):
                self.model = PeftModel.from_pretrained(
                    self.model, lora.lora_path, adapter_name=name
                )
            else:
                self.model.load_adapter(lora.lora_path, adapter_name=name)
            self.loaded[lora.lora_int_id] = lora.lora_path
        return name

    async def generate(
        self,
        prompt: dict[str, Any],
        sampling_params: SamplingParams,
        request_id: str,
        *,
        lora_request: LoRARequest | None = None,
    ) -> AsyncIterator[RequestOutput]:
        self.requests_seen.append((request_id, lora_request.lora_int_id if lora_request else None))
        name = self._load(lora_request) if lora_request is not None else None
        ids = list(prompt["prompt_token_ids"])
        new: list[int] = []
        generator = torch.Generator().manual_seed(sampling_params.seed or 0)
        reason = None
        while reason is None:
            await asyncio.sleep(0)  # other requests step in between, as in a batch
            if request_id in self.aborted:
                reason = "abort"
                break
            token = self._next(ids + new, name, sampling_params, generator)
            new.append(token)
            if token in self.ends:
                reason = "stop"
            elif len(new) >= sampling_params.max_tokens:
                reason = "length"
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            yield RequestOutput(
                request_id, [CompletionOutput(0, text, list(new), reason)], reason is not None
            )
        if reason == "abort":
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            yield RequestOutput(request_id, [CompletionOutput(0, text, list(new), reason)], True)

    def _next(
        self, ids: list[int], adapter: str | None, params: SamplingParams, rng: torch.Generator
    ) -> int:
        from peft import PeftModel

        model = self.model
        with torch.no_grad():
            if isinstance(model, PeftModel) and adapter is not None:
                model.set_adapter(adapter)
                logits = model(torch.tensor([ids])).logits[0, -1]
            elif isinstance(model, PeftModel):
                with model.disable_adapter():
                    logits = model(torch.tensor([ids])).logits[0, -1]
            else:
                logits = model(torch.tensor([ids])).logits[0, -1]
        if params.temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / params.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=rng))
