"""Measuring a candidate adapter against the active version, inside the trainer child.

Called by ``learning/trainer.py`` after training, with the candidate still loaded (PEFT
adapter "default"). The active version is loaded beside it as adapter "active" (or the
adapter is disabled when the base model is active), so both are measured on the same
data in the same process:

- held-out preference accuracy: the share of held-out pairs where
  log p(chosen | prompt) > log p(rejected | prompt), summed over the answer's tokens,
  and the mean margin between the two (a tie-breaker that does not saturate);
- held-out corrections: the share of held-out corrected turns whose greedy answer now
  matches the correction (equal after normalising case, punctuation and whitespace;
  generated only as far as the correction goes);
- what was taught, when nothing is held out (a first handful of feedback): how many of
  the trained corrections the greedy answers now give, and the liked answers' mean
  log-probability per token;
- the control set: prompts with known good answers; per version the mean log-probability
  per token of the good answer and the share of greedy answers containing it, plus the
  greedy answers themselves (stored with the version), and the same numbers for the base
  model, which the gate holds the control set against. A version's control scores never
  change, so those measured in an earlier cycle are reused;
- with ``--eval-file``: task accuracy, the share of labelled rows whose greedy answer
  names exactly the gold label (learning/tasks.py);
- how far the candidate moved from the active version (``kl``): the mean per-token
  KL(active || candidate) of their next-token distributions along the good answers of
  the control set and of the held-out feedback, each (forgetting shows there first: a
  version that keeps its answers but spreads its probability elsewhere).

Deciding what the numbers mean is not done here: see ``learning/gate.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from learnloop.learning import chat_format
from learnloop.learning.quality import normalise
from learnloop.learning.tasks import answers, macro_f1, named_labels
from learnloop.learning.toolbox import Toolbox, load_tools
from learnloop.storage.records import Message

Row = dict[str, Any]
Tools = list[dict[str, Any]] | None
MAX_TOOL_STEPS = 4  # model calls per tool-task row: the agent's default --max-steps
MIN_TOOL_TOKENS = 64  # a step of a tool task may be a call: room for one


def _ids(
    tokenizer: Any, prompt: list[Message], answer: str, tools: Tools = None
) -> tuple[list[int], int]:
    """Token ids of prompt + answer (+ end of turn), and where the answer starts."""
    text = chat_format.render(tokenizer, prompt, tools)
    head = tokenizer(text, add_special_tokens=False)["input_ids"]
    tail = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return head + tail, len(head)


def answer_logp(
    model: Any, tokenizer: Any, prompt: list[Message], answer: str, tools: Tools = None
) -> tuple[float, int]:
    """Sum of log p(answer tokens | prompt) and the number of answer tokens."""
    logprobs, targets = answer_logprobs(model, tokenizer, prompt, answer, tools)
    return float(logprobs.gather(1, targets[:, None]).sum().item()), int(targets.shape[0])


def answer_logprobs(
    model: Any, tokenizer: Any, prompt: list[Message], answer: str, tools: Tools = None
) -> tuple[Any, Any]:
    """The model's log-probabilities over the vocabulary at each token of ``answer``
    (teacher-forced after ``prompt``), a [tokens, vocab] tensor, and those tokens."""
    import torch

    ids, start = _ids(tokenizer, prompt, answer, tools)
    tensor = torch.tensor([ids], device=model.device)
    with torch.inference_mode():
        logits = model(input_ids=tensor).logits[0, start - 1 : -1].float()
    return torch.log_softmax(logits, dim=-1), tensor[0, start:]


def divergence(
    model: Any, tokenizer: Any, rows: list[Row], active: str | None, tick: Tick
) -> float | None:
    """Mean per-token KL(active || candidate) over ``rows`` ({"prompt", "answer"}): how far
    the candidate's next-token distributions moved from the active version's, along the
    rows' good answers. The candidate is adapter "default", the active version adapter
    ``active`` (None: the base). None without rows."""
    total, tokens = 0.0, 0
    for row in rows:
        args = (model, tokenizer, row["prompt"], row["answer"], row.get("tools"))
        with as_version(model, "default"):
            cand, _ = answer_logprobs(*args)
        with as_version(model, active):
            act, _ = answer_logprobs(*args)
        total += float((act.exp() * (act - cand)).sum())
        tokens += int(act.shape[0])
        tick()
    return total / tokens if tokens else None


def greedy(
    model: Any,
    tokenizer: Any,
    prompt: list[Message],
    max_new_tokens: int,
    decided: Callable[[str], bool] | None = None,
    tools: Tools = None,
) -> str:
    """The greedy answer to ``prompt``. ``decided(text so far)``, when given, ends it
    early once the answer so far settles the question being asked of it: greedy decoding
    is deterministic, so the rest could not change the verdict, only cost time."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    text = chat_format.render(tokenizer, prompt, tools)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    start = inputs["input_ids"].shape[1]

    class Decided(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            so_far = tokenizer.decode(input_ids[0, start:], skip_special_tokens=True)
            return torch.full((input_ids.shape[0],), bool(decided and decided(so_far)))

    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            stopping_criteria=StoppingCriteriaList([Decided()]) if decided else None,
        )
    return str(tokenizer.decode(out[0, start:], skip_special_tokens=True))


def task_scores(
    model: Any, tokenizer: Any, task: list[Row], max_new_tokens: int, tick: Tick
) -> dict[str, float]:
    """Accuracy and macro-F1 of greedy answers to labelled rows (learning/tasks.py judges:
    an answer predicts a label when it names exactly that one)."""
    golds, predictions = [], []
    for row in task:
        named = named_labels(greedy(model, tokenizer, row["prompt"], max_new_tokens), row["labels"])
        predictions.append(named[0] if len(named) == 1 else None)
        golds.append(row["label"])
        tick()
    hits = sum(p == g for p, g in zip(predictions, golds, strict=True))
    return {
        "task_accuracy": hits / len(task),
        "task_macro_f1": macro_f1(golds, predictions, task[0]["labels"]),
    }


Tick = Callable[[], None]


def tool_task_scores(
    model: Any, tokenizer: Any, task: list[Row], toolbox: Toolbox, max_new_tokens: int, tick: Tick
) -> dict[str, float | None]:
    """Accuracy of greedy trajectories on tool rows (``{"prompt", "answer", "tool"}``):
    the model's calls run with the real tools, up to :data:`MAX_TOOL_STEPS` model calls,
    and the final answer is judged by learning/tasks.py :func:`answers`; ``task_tool_use``
    is the share of rows whose trajectory called the row's expected tool."""
    right = used = 0
    for row in task:
        final, called = run_trajectory(model, tokenizer, row["prompt"], toolbox, max_new_tokens)
        right += answers(final, row["answer"])
        used += bool(row.get("tool")) and row["tool"] in called
        tick()
    return {
        "task_accuracy": right / len(task),
        "task_macro_f1": None,
        "task_tool_use": used / len(task),
    }


def ends_call(text: str) -> bool:
    return chat_format.CLOSE in text


def run_trajectory(
    model: Any, tokenizer: Any, prompt: list[Message], toolbox: Toolbox, max_new_tokens: int
) -> tuple[str, list[str]]:
    """The final answer of a greedy trajectory from ``prompt`` (no final answer within
    the step cap: '') and the names of the tools it called, in order."""
    messages, called = list(prompt), list[str]()
    tokens = max(max_new_tokens, MIN_TOOL_TOKENS)
    for _ in range(MAX_TOOL_STEPS):
        said = chat_format.parse_output(  # ends at its first call, as in chat (for_tools)
            greedy(model, tokenizer, messages, tokens, ends_call, toolbox.schemas())
        )
        if not said.tool_calls:
            return said.content or "", called
        messages.append(
            {"role": "assistant", "content": said.content, "tool_calls": said.tool_calls}
        )
        for call in said.tool_calls:
            name = call["function"]["name"]
            called.append(name)
            result = toolbox.run(name, call["function"]["arguments"])
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result.content})
    return "", called


def fix_match(model: Any, tokenizer: Any, fix: Row) -> bool:
    """Whether the greedy answer to a corrected prompt now equals its correction. The
    answer is generated only as far as the correction goes (plus a few tokens for the end
    and punctuation): anything longer cannot be equal."""
    target = chat_format.assistant_text(fix["completion"][0])  # a first call, or the answer
    limit = len(tokenizer(target, add_special_tokens=False)["input_ids"]) + 3
    wanted = normalise(target)

    def strayed(text: str) -> bool:  # no longer on the way to the correction
        # the last word may still be growing ("Hop" -> "Hopper"): judge the words before it
        said = normalise(text)
        done = said.rsplit(" ", 1)[0] if " " in said else ""
        return bool(done) and not wanted.startswith(done)

    answer = greedy(model, tokenizer, fix["prompt"], limit, strayed, fix.get("tools"))
    return normalise(answer) == wanted


def held_out_scores(model: Any, tokenizer: Any, data: dict[str, list[Row]], tick: Tick) -> Row:
    """Preference accuracy and margin on held-out pairs; correction match on held-out fixes."""
    pairs, fixes = data["pairs"], data["fixes"]
    wins, margins = 0, []
    for pair in pairs:
        prompt, tools = pair["prompt"], pair.get("tools")
        chosen, _ = answer_logp(
            model, tokenizer, prompt, chat_format.first_step(pair["chosen"]), tools
        )
        rejected, _ = answer_logp(
            model, tokenizer, prompt, chat_format.first_step(pair["rejected"]), tools
        )
        wins += chosen > rejected
        margins.append(chosen - rejected)
        tick()
    matched = 0
    for fix in fixes:
        matched += fix_match(model, tokenizer, fix)
        tick()
    return {
        "heldout_pairs": len(pairs),
        "preference_accuracy": wins / len(pairs) if pairs else None,
        "preference_margin": sum(margins) / len(margins) if margins else None,
        "heldout_corrections": len(fixes),
        "correction_match": matched / len(fixes) if fixes else None,
    }


def taught_scores(model: Any, tokenizer: Any, data: dict[str, list[Row]], tick: Tick) -> Row:
    """What the candidate was taught: how many trained corrections its greedy answers now
    give, and the liked answers' mean log-probability per token."""
    fixes, liked = data.get("taught_fixes", []), data.get("taught_liked", [])
    matched = 0
    for fix in fixes:
        matched += fix_match(model, tokenizer, fix)
        tick()
    per_token = []
    for row in liked:
        logp, n = answer_logp(model, tokenizer, row["prompt"], row["answer"], row.get("tools"))
        per_token.append(logp / max(n, 1))
        tick()
    return {
        "taught_corrections": len(fixes),
        "taught_corrected": matched,
        "taught_liked": len(liked),
        "taught_liked_logp": sum(per_token) / len(per_token) if per_token else None,
    }


def contains(expect: str) -> Callable[[str], bool]:
    """Decided: the answer so far names the expected words (a control hit)."""
    return lambda text: expect in normalise(text)


def control_scores(
    model: Any, tokenizer: Any, control: list[Row], max_new_tokens: int, tick: Tick
) -> Row:
    """Per control prompt: the good answer's log-prob per token and whether the greedy
    answer contains the expected words; the answers themselves."""
    answers, per_token, hits = [], [], 0
    for item in control:
        prompt = [{"role": "user", "content": item["prompt"]}]
        logp, n = answer_logp(model, tokenizer, prompt, item["answer"])
        per_token.append(logp / max(n, 1))
        expect = normalise(item["expect"])
        answer = greedy(model, tokenizer, prompt, max_new_tokens, contains(expect))
        hit = expect in normalise(answer)
        hits += hit
        answers.append({"prompt": item["prompt"], "answer": answer, "correct": hit})
        tick()
    return {
        "control_prompts": len(control),
        "control_logp_per_token": sum(per_token) / len(per_token) if per_token else None,
        "control_accuracy": hits / len(control) if control else None,
        "control_answers": answers,
    }


def measure(
    model: Any,
    tokenizer: Any,
    data: dict[str, list[Row]],
    tokens: tuple[int, int],
    tick: Tick = lambda: None,
    control: Row | None = None,
    toolbox: Toolbox | None = None,
) -> dict[str, Any]:
    """All gate metrics for whichever adapter is current on ``model``; ``data`` holds the
    "pairs", "fixes", "control", "task", "taught_fixes" and "taught_liked" rows (each
    possibly empty). ``control``: this version's control scores measured before (on the
    same control set and answer length), reused instead of measured again. Task rows
    with an "answer" are a tool task, run with ``toolbox``."""
    max_new_tokens, task_max_new_tokens = tokens
    task = data["task"]
    if control is None:
        control = control_scores(model, tokenizer, data["control"], max_new_tokens, tick)
    scores: dict[str, Any] = {"task_accuracy": None, "task_macro_f1": None}
    if task and "answer" in task[0]:
        tools = toolbox or Toolbox({})
        scores = tool_task_scores(model, tokenizer, task, tools, task_max_new_tokens, tick)
    elif task:
        scores = task_scores(model, tokenizer, task, task_max_new_tokens, tick)
    return {
        **held_out_scores(model, tokenizer, data, tick),
        **taught_scores(model, tokenizer, data, tick),
        **control,
        "task_rows": len(task),
        **scores,
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


NONE: dict[str, list[Row]] = {
    "pairs": [], "fixes": [], "control": [], "task": [], "taught_fixes": [], "taught_liked": [],
}  # fmt: skip
CONTROL_KEYS = ("control_prompts", "control_accuracy", "control_logp_per_token")


def work(data: dict[str, list[Row]], control_known: bool) -> int:
    """How many prompts one version's measurement goes through (for progress k of N)."""
    return sum(len(rows) for key, rows in data.items() if key != "control" or not control_known)


def compare(
    model: Any,
    tokenizer: Any,
    gate: Row,
    data: dict[str, list[Row]],
    progress: Callable[[int, int], None] = lambda k, n: None,
) -> dict[str, Any]:
    """Measure the candidate ("default" adapter) and the active version on the same data.

    The control set is measured once per version: the gate request carries what is known
    already (``active_control``, ``base_control``: the cycle keeps them per version,
    learning/control_cache.py), and only the rest is measured. ``progress(k, n)`` is
    called after each prompt."""
    model.eval()
    active_adapter = gate.get("active_adapter")
    known_active, known_base = gate.get("active_control"), gate.get("base_control")
    total = work(data, False) + work(data, known_active is not None)
    total += sum(len(rows) for rows in drift_rows(data).values())
    if active_adapter and known_base is None:
        total += len(data["control"])
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        progress(done, total)

    tokens = int(gate.get("max_new_tokens", 48)), int(gate.get("task_max_new_tokens", 16))
    toolbox = load_tools(gate.get("tools") or []) if gate.get("tools") else None
    with as_version(model, "default"):
        candidate = measure(model, tokenizer, data, tokens, tick, toolbox=toolbox)
    if active_adapter:
        model.load_adapter(active_adapter, adapter_name="active")
    with as_version(model, "active" if active_adapter else None):
        active = measure(model, tokenizer, data, tokens, tick, known_active, toolbox)
    drift = {
        part: divergence(model, tokenizer, rows, "active" if active_adapter else None, tick)
        for part, rows in drift_rows(data).items()
    }
    if not active_adapter:
        base = active
    elif known_base is not None:
        base = known_base
    else:
        model.delete_adapter("active")
        with as_version(model, None):  # the base: the control set's fixed reference
            base = control_scores(model, tokenizer, data["control"], tokens[0], tick)
    return {
        "active_version": gate.get("active_version", "base"),
        "candidate": candidate,
        "active": active,
        "base_control": {k: base[k] for k in (*CONTROL_KEYS, "control_answers") if k in base},
        "kl": drift,
    }


def drift_rows(data: dict[str, list[Row]]) -> dict[str, list[Row]]:
    """What the candidate's drift from the active version is measured on: the control set
    (general ability) and the held-out feedback (the users' job), each along its good
    answers (a correction, the preferred answer of a pair)."""
    heldout = [
        {"prompt": f["prompt"], "answer": chat_format.first_step(f["completion"]), **_tools(f)}
        for f in data["fixes"]
    ] + [
        {"prompt": p["prompt"], "answer": chat_format.first_step(p["chosen"]), **_tools(p)}
        for p in data["pairs"]
    ]
    control = [
        {"prompt": [{"role": "user", "content": c["prompt"]}], "answer": c["answer"]}
        for c in data["control"]
    ]
    return {"control": control, "heldout": heldout}


def _tools(row: Row) -> Row:
    return {"tools": row["tools"]} if row.get("tools") else {}
