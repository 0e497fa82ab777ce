"""Tools of the inventory task: a shop's stock and prices, which no model can know.

Every public function is one tool (type hints and a Google-style docstring describe it, as
learning/toolbox.py reads them). The shop is made up and fixed: each figure is a function
of the product code's hash, so the task's answers are known without storing a table.
"""

import hashlib
import re

_CODE = re.compile(r"^SKU-\d{4}$")


def _figure(sku: str, what: str, low: int, high: int) -> int:
    code = sku.strip().upper()
    if not _CODE.match(code):
        raise ValueError(f"unknown product code {sku!r}: codes look like SKU-4821")
    digest = hashlib.sha256(f"{what}:{code}".encode()).hexdigest()
    return low + int(digest, 16) % (high - low + 1)


def stock_level(sku: str) -> str:
    """How many units of a product the shop has in stock now.

    Args:
        sku: The product code, e.g. "SKU-4821".
    """
    return str(_figure(sku, "stock", 0, 950))


def unit_price(sku: str) -> str:
    """The price of one unit of a product, in euros.

    Args:
        sku: The product code, e.g. "SKU-4821".
    """
    cents = _figure(sku, "price", 199, 99_999)
    return f"{cents // 100}.{cents % 100:02d}"
