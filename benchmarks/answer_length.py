"""How long an answer should be allowed to get on CPU: what GenerationConfig's defaults
(``max_new_tokens``, the first-paragraph stop) come from.

For 20 everyday questions (:data:`QUESTIONS`; 5 of them ask for more than a paragraph:
a list, steps, code, a text to write), the real model (SmolLM2-135M-Instruct, converted
from the packaged GGUF as ``learnloop`` does, fp32 on CPU) answers once with the old
limit of 256 new tokens, sampling as the chat does (temperature 0.2, top-p 0.9,
repetition penalty 1.05) with a fixed seed, and the time each token arrived is recorded.

Every other setting is read off that run exactly: with the same seed the model draws the
same tokens, so an answer under a lower cap is the first N tokens of this one, arriving
at the time token N arrived; the paragraph stop is agent/stopping.py's own StopScanner fed
the decoded text token by token, with the rule of GenerationConfig.for_message (a
question asking for more is answered whole). Per setting: seconds to the end of the
answer (median, p90, total; the machine's load inflates them, tokens do not change),
tokens per answer, answers that hit the token limit, answers cut mid-sentence (hit the
limit with an unfinished last sentence: what a user sees as "cut off"), and answers
ended at their first paragraph.

    nice python -m benchmarks.answer_length [--model SPEC] [--json OUT.json] [--verbose]

Takes several minutes on 2 idle CPU cores (about 3,200 tokens in all). Measured here
(tokens do not depend on the load; the seconds of a busy machine do, and 2 idle cores
ran about 28 tokens/s):

| setting | tokens/answer | hit limit | cut mid-sentence | ended at 1st paragraph |
|---|---|---|---|---|
| 256 tokens, whole answer (the old default) | 161.1 | 7/20 | 7/20 | 0/20 |
| 128 tokens, whole answer | 103.4 | 10/20 | 8/20 | 0/20 |
| 96 tokens, whole answer | 86.2 | 13/20 | 13/20 | 0/20 |
| 128 tokens, first paragraph (the new default) | 91.0 | 5/20 | 5/20 | 6/20 |
| 96 tokens, first paragraph | 81.6 | 9/20 | 9/20 | 5/20 |
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUESTIONS = [
    "What is the capital of Australia?",
    "Why is the sky blue?",
    "How many minutes should I boil an egg for a soft yolk?",
    "What does a router do in a home network?",
    "Is it better to drink water before or after a meal?",
    "What is the difference between weather and climate?",
    "Why do cats purr?",
    "What is a good name for a grey kitten?",
    "How far is the Moon from the Earth?",
    "What does 'carpe diem' mean?",
    "Can I put aluminium foil in a microwave?",
    "Why do onions make you cry?",
    "What is the boiling point of water at high altitude?",
    "Should I use a comma before 'and' in a list of three things?",
    "What causes hiccups?",
    # these ask for more than a paragraph: the paragraph stop leaves them whole
    "List five vegetables that grow well in shade.",
    "What are the steps to change a flat bicycle tyre?",
    "Write a short poem about autumn rain.",
    "Write Python code that reverses a string.",
    "Explain in detail how a refrigerator keeps food cold.",
]

SENTENCE_END = (".", "!", "?", '."', '!"', '?"', ".)", "```")
SEED = 0


@dataclass(frozen=True)
class Setting:
    name: str
    max_new_tokens: int
    whole_answer: bool


SETTINGS = [
    Setting("256 tokens, whole answer (the old default)", 256, True),
    Setting("128 tokens, whole answer", 128, True),
    Setting("96 tokens, whole answer", 96, True),
    Setting("128 tokens, first paragraph (the new default)", 128, False),
    Setting("96 tokens, first paragraph", 96, False),
]


def cut_mid_sentence(answer: str, truncated: bool) -> bool:
    """Hit the token limit with its last sentence unfinished."""
    return truncated and not answer.rstrip().endswith(SENTENCE_END)


def generate_timed(model: Any, tokenizer: Any, question: str, limit: int) -> dict[str, Any]:
    """One sampled answer (the chat's settings, seed :data:`SEED`): its new token ids, the
    seconds after the call at which each arrived, and whether it ended by itself."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    arrived: list[float] = []
    started = time.perf_counter()

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:  # generate() hands the prompt over first
                self.prompt_seen = True
                return
            arrived.append(time.perf_counter() - started)

        def end(self) -> None:
            pass

    torch.manual_seed(SEED)
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=limit,
            do_sample=True,
            temperature=0.2,
            top_p=0.9,
            repetition_penalty=1.05,
            streamer=Clock(),
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    ids = out[0, inputs["input_ids"].shape[1] :].tolist()
    ends = {tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)}
    ended = bool(ids) and ids[-1] in ends
    return {"ids": ids[:-1] if ended else ids, "ended": ended, "arrived": arrived}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def read_off(
    run: dict[str, Any], tokenizer: Any, question: str, setting: Setting
) -> dict[str, Any]:
    """The answer ``setting`` gives, from the 256-token run of the same question."""
    from learnloop.agent.config import GenerationConfig
    from learnloop.agent.stopping import StopScanner

    config = GenerationConfig(
        max_new_tokens=setting.max_new_tokens, whole_answer=setting.whole_answer
    ).for_message(question)
    ids = run["ids"][: setting.max_new_tokens]
    scanner = StopScanner((), paragraph=not config.whole_answer)
    shown, used, decoded = "", len(ids), ""
    for n in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:n], skip_special_tokens=True)
        shown += scanner.feed(text[len(decoded) :])
        decoded = text
        if scanner.stopped_by is not None:
            used = n
            break
    shown += scanner.finish()
    # cut by the limit: all of it used, and not ended by the model within it
    truncated = scanner.stopped_by is None and not (
        run["ended"] and len(run["ids"]) <= setting.max_new_tokens
    )
    tokens = used + (0 if truncated or scanner.stopped_by else 1)  # + the end-of-turn token
    arrived = run["arrived"]
    seconds = arrived[min(tokens, len(arrived)) - 1] if arrived and tokens else 0.0
    return {
        "question": question,
        "seconds": round(seconds, 3),
        "tokens": tokens,
        "truncated": truncated,
        "stopped_by": scanner.stopped_by,
        "whole_answer": config.whole_answer,
        "cut_mid_sentence": cut_mid_sentence(shown, truncated),
        "answer": shown,
    }


def summarise(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = sorted(r["seconds"] for r in rows)
    return {
        "setting": name,
        "answers": len(rows),
        "median_s": round(statistics.median(seconds), 2),
        "p90_s": round(seconds[int(0.9 * (len(seconds) - 1))], 2),
        "total_s": round(sum(seconds), 1),
        "mean_tokens": round(statistics.mean(r["tokens"] for r in rows), 1),
        "hit_limit": sum(r["truncated"] for r in rows),
        "cut_mid_sentence": sum(r["cut_mid_sentence"] for r in rows),
        "first_paragraph": sum(r["stopped_by"] == "paragraph" for r in rows),
    }


def table(summaries: list[dict[str, Any]]) -> str:
    head = (
        "| setting | median s | p90 s | total s | tokens/answer | hit limit "
        "| cut mid-sentence | ended at 1st paragraph |"
    )
    lines = [head, "|" + "---|" * 8]
    for s in summaries:
        lines.append(
            f"| {s['setting']} | {s['median_s']} | {s['p90_s']} | {s['total_s']} "
            f"| {s['mean_tokens']} | {s['hit_limit']}/{s['answers']} "
            f"| {s['cut_mid_sentence']}/{s['answers']} | {s['first_paragraph']}/{s['answers']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model spec (default: SmolLM2-135M)")
    parser.add_argument("--json", type=Path, default=None, help="write every answer here")
    parser.add_argument("--verbose", action="store_true", help="print every answer")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="the first N")
    args = parser.parse_args(argv)
    questions = QUESTIONS[: args.questions]

    from learnloop.agent.transformers_engine import TransformersBackend
    from learnloop.learning.models import resolve_model

    resolved = resolve_model(args.model)
    backend = TransformersBackend(resolved.path, resolved.name)  # loads as the chat does
    model, tokenizer = backend.model, backend.tokenizer
    generate_timed(model, tokenizer, "Hi", 4)  # untimed warm-up
    runs = {}
    for n, question in enumerate(questions, start=1):
        print(f"{n}/{len(questions)}: {question}", file=sys.stderr, flush=True)
        runs[question] = generate_timed(model, tokenizer, question, 256)
        if args.json is not None:  # what is done so far survives an interrupted run
            args.json.write_text(json.dumps({"runs": runs}))
    results = {
        setting.name: [read_off(runs[q], tokenizer, q, setting) for q in questions]
        for setting in SETTINGS
    }
    summaries = [summarise(name, rows) for name, rows in results.items()]
    if args.verbose:
        for name, rows in results.items():
            print(f"\n## {name}\n")
            for r in rows:
                flags = f"{r['tokens']} tok, {r['seconds']} s, stopped_by={r['stopped_by']}"
                print(f"- {r['question']} ({flags}): {r['answer']!r}")
    print(f"\n{resolved.name}, {len(questions)} questions, seed {SEED}, temperature 0.2\n")
    print(table(summaries))
    if args.json is not None:
        saved = {"summaries": summaries, "answers": results, "runs": runs}
        args.json.write_text(json.dumps(saved, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
