"""Measuring a candidate adapter against the active version, inside the trainer child.

Called by ``learning/trainer.py`` after training, with the candidate still loaded (PEFT
adapter "default"). The active version is loaded beside it as adapter "active" (or the
adapter is disabled when the base model is active), so both are measured on the same
data in the same process:

- held-out preference accuracy: the share of held-out pairs where
  log p(chosen | prompt) > log p(rejected | prompt), summed over the answer's tokens,
  and the mean margin between the two (a tie-breaker that does not saturate);
- held-out corrections: the share of held-out corrected turns whose greedy answer now
  matches the correction (equal after normalising case, punctuation and whitespace);
- the control set: prompts with known good answers; per version the mean log-probability
  per token of the good answer and the share of greedy answers containing it, plus the
  greedy answers themselves (stored with the version), and the same numbers for the base
  model, which the gate holds the control set against;
- with ``--eval-file``: task accuracy, the share of labelled rows whose greedy answer
  names exactly the gold label (learning/tasks.py).

Deciding what the numbers mean is not done here: see ``learning/gate.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from learnloop.learning.quality import normalise
from learnloop.learning.tasks import macro_f1, named_labels

Row = dict[str, Any]


def _ids(tokenizer: Any, prompt: list[dict[str, str]], answer: str) -> tuple[list[int], int]:
    """Token ids of prompt + answer (+ end of turn), and where the answer starts."""
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    head = tokenizer(text, add_special_tokens=False)["input_ids"]
    tail = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return head + tail, len(head)


def answer_logp(
    model: Any, tokenizer: Any, prompt: list[dict[str, str]], answer: str
) -> tuple[float, int]:
    """Sum of log p(answer tokens | prompt) and the number of answer tokens."""
    import torch

    ids, start = _ids(tokenizer, prompt, answer)
    tensor = torch.tensor([ids], device=model.device)
    with torch.inference_mode():
        logits = model(input_ids=tensor).logits[0, start - 1 : -1].float()
    targets = tensor[0, start:]
    logp = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).sum().item()
    return float(logp), len(ids) - start


def greedy(model: Any, tokenizer: Any, prompt: list[dict[str, str]], max_new_tokens: int) -> str:
    import torch

    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    return str(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))


def task_scores(
    model: Any, tokenizer: Any, task: list[Row], max_new_tokens: int
) -> dict[str, float]:
    """Accuracy and macro-F1 of greedy answers to labelled rows (learning/tasks.py judges:
    an answer predicts a label when it names exactly that one)."""
    golds, predictions = [], []
    for row in task:
        named = named_labels(greedy(model, tokenizer, row["prompt"], max_new_tokens), row["labels"])
        predictions.append(named[0] if len(named) == 1 else None)
        golds.append(row["label"])
    hits = sum(p == g for p, g in zip(predictions, golds, strict=True))
    return {
        "task_accuracy": hits / len(task),
        "task_macro_f1": macro_f1(golds, predictions, task[0]["labels"]),
    }


def measure(
    model: Any,
    tokenizer: Any,
    data: dict[str, list[Row]],
    max_new_tokens: int,
    task_max_new_tokens: int,
) -> dict[str, Any]:
    """All gate metrics for whichever adapter is current on ``model``; ``data`` holds the
    "pairs", "fixes", "control" and "task" rows (each possibly empty)."""
    pairs, fixes, control, task = data["pairs"], data["fixes"], data["control"], data["task"]
    wins, margins = 0, []
    for pair in pairs:
        chosen, _ = answer_logp(model, tokenizer, pair["prompt"], pair["chosen"][0]["content"])
        rejected, _ = answer_logp(model, tokenizer, pair["prompt"], pair["rejected"][0]["content"])
        wins += chosen > rejected
        margins.append(chosen - rejected)
    matched = 0
    for fix in fixes:
        answer = greedy(model, tokenizer, fix["prompt"], max_new_tokens)
        matched += normalise(answer) == normalise(fix["completion"][0]["content"])
    answers, per_token, hits = [], [], 0
    for item in control:
        prompt = [{"role": "user", "content": item["prompt"]}]
        logp, n = answer_logp(model, tokenizer, prompt, item["answer"])
        per_token.append(logp / max(n, 1))
        answer = greedy(model, tokenizer, prompt, max_new_tokens)
        hit = normalise(item["expect"]) in normalise(answer)
        hits += hit
        answers.append({"prompt": item["prompt"], "answer": answer, "correct": hit})
    return {
        "heldout_pairs": len(pairs),
        "preference_accuracy": wins / len(pairs) if pairs else None,
        "preference_margin": sum(margins) / len(margins) if margins else None,
        "heldout_corrections": len(fixes),
        "correction_match": matched / len(fixes) if fixes else None,
        "control_prompts": len(control),
        "control_logp_per_token": sum(per_token) / len(per_token) if per_token else None,
        "control_accuracy": hits / len(control) if control else None,
        "control_answers": answers,
        "task_rows": len(task),
        **(
            task_scores(model, tokenizer, task, task_max_new_tokens)
            if task
            else {"task_accuracy": None, "task_macro_f1": None}
        ),
    }


@contextlib.contextmanager
def as_version(model: Any, adapter: str | None) -> Iterator[None]:
    """Run the block with the adapter named ``adapter`` current, or none for the base."""
    if adapter is None:
        with model.disable_adapter():
            yield
        return
    previous = model.active_adapter
    model.set_adapter(adapter)
    try:
        yield
    finally:
        model.set_adapter(previous)


NONE: dict[str, list[Row]] = {"pairs": [], "fixes": [], "control": [], "task": []}
CONTROL_KEYS = ("control_prompts", "control_accuracy", "control_logp_per_token")


def compare(model: Any, tokenizer: Any, gate: Row, data: dict[str, list[Row]]) -> dict[str, Any]:
    """Measure the candidate ("default" adapter) and the active version on the same data."""
    model.eval()
    active_adapter = gate.get("active_adapter")
    if active_adapter:
        model.load_adapter(active_adapter, adapter_name="active")
    tokens = int(gate.get("max_new_tokens", 48)), int(gate.get("task_max_new_tokens", 16))
    with as_version(model, "default"):
        candidate = measure(model, tokenizer, data, *tokens)
    with as_version(model, "active" if active_adapter else None):
        active = measure(model, tokenizer, data, *tokens)
    if active_adapter:
        model.delete_adapter("active")
        with as_version(model, None):  # the base: the control set's fixed reference
            base = measure(model, tokenizer, {**NONE, "control": data["control"]}, *tokens)
    else:
        base = active
    return {
        "active_version": gate.get("active_version", "base"),
        "candidate": candidate,
        "active": active,
        "base_control": {k: base[k] for k in CONTROL_KEYS},
    }
