"""Writes the inventory task's train.jsonl and dev.jsonl into a folder (default: here).

A tool task of another kind than ../shared/data/tool_arithmetic: looking facts up instead
of computing, with two tools to choose between (tools.py). Rows are {"id", "text",
"answer", "calls"} as learning/tasks.py reads tool tasks. Deterministic (seed fixed);
train and dev never share a product code.

    python benchmarks/inventory/make.py OUT_DIR
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tools import stock_level, unit_price  # noqa: E402

STOCK = [
    "How many units of {sku} are in stock?",
    "Is {sku} in stock? How many units are there?",
    "A customer asks how many {sku} we have left. What do I tell them?",
    "Check the stock of {sku}, please.",
]
PRICE = [
    "What does one {sku} cost, in euros?",
    "How much is {sku}?",
    "A customer wants the price of {sku}. What is it?",
    "Look up the unit price of {sku}.",
]


def rows(codes: list[str], rng: random.Random, prefix: str) -> list[dict[str, object]]:
    out = []
    for i, sku in enumerate(codes):
        if rng.random() < 0.5:
            text, name, answer = rng.choice(STOCK), "stock_level", stock_level(sku)
        else:
            text, name, answer = rng.choice(PRICE), "unit_price", unit_price(sku)
        call = {"name": name, "arguments": {"sku": sku}}
        out.append(
            {"id": f"{prefix}-{i}", "text": text.format(sku=sku), "answer": answer, "calls": [call]}
        )
    return out


def main(folder: Path) -> None:
    rng = random.Random(13)
    codes = [f"SKU-{n:04d}" for n in rng.sample(range(1000, 10000), 1500)]
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", codes[:1200]), ("dev", codes[1200:])):
        with (folder / f"{name}.jsonl").open("w") as f:
            for row in rows(part, rng, name):
                f.write(json.dumps(row) + "\n")
    print(f"wrote {folder}/train.jsonl (1200 rows) and dev.jsonl (300 rows)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
