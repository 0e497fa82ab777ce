from dataclasses import dataclass


@dataclass(frozen=True)
class LoRARequest:
    """As vLLM's: ``lora_int_id`` must be unique per adapter, which vLLM does not check."""

    lora_name: str
    lora_int_id: int
    lora_path: str = ""

    def __post_init__(self) -> None:
        if self.lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")
        assert self.lora_path, "lora_path cannot be empty"
