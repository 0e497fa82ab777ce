"""Random LoRA adapters registered as versions: stand-ins for trained ones where only
switching matters (the serving benchmark, the hot-swap test)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from learnloop.storage.store import Store


def save_random_adapter(
    model_path: str | Path,
    folder: Path,
    seed: int,
    modules: list[str],
    r: int = 16,
    random_b: bool = True,
) -> None:
    """A LoRA adapter with random A and, unless ``random_b`` is off, random B. PEFT's own
    initialisation (B = 0) answers like the base at the same cost: enough for timing, but
    answers could not tell the versions apart."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    config = LoraConfig(r=r, target_modules=modules, init_lora_weights=not random_b)
    get_peft_model(model, config).save_pretrained(str(folder))


def register_adapter(
    store: Store, version_id: str, folder: Path, base_model: str, who: str, why: str
) -> None:
    """Record ``folder`` as version ``version_id`` (a child of the base), not activated."""
    from learnloop.storage.records import Version

    run_id = store.start_run("sft", {}, str(folder), 0)
    version = Version(
        id=version_id,
        parent="base",
        run_id=run_id,
        method="sft",
        base_model=base_model,
        adapter_path=str(folder),
        sft_count=0,
        dpo_count=0,
        metrics={},
        created_at=datetime.now(),
    )
    store.add_version(version, activate=False, who=who, why=why)
