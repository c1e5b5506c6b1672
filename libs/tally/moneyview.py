"""Money as the API shows it: exact integer micro-dollars, plus a rounded display string.

Tables store ``cost_micros`` (:mod:`tally.money`); a figure that still travels in dollars
(a reservation's ``cost_usd``, a stored learner score of older rows) goes through
:func:`micros` once. ``kpi.json`` and every endpoint show ``cost_micros: 58500`` beside
``cost_usd: "0.0585"`` (:func:`usd_string`), never a float of dollars.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any

from pydantic import Field

from tally.money import usd_to_micros

#: Micro-dollars in a dollar.
PER_USD = 1_000_000
#: Decimal places of the display string (``"0.0585"``).
DISPLAY_PLACES = Decimal("0.0001")

#: Exact money in JSON: whole micro-dollars (1 USD = 1,000,000).
Micros = Annotated[int, Field(description="Exact amount in micro-dollars (1 USD = 1,000,000).")]
#: Money for people: dollars rounded to 4 places, as a string (``"0.0585"``).
UsdText = Annotated[
    str,
    Field(description="Dollars rounded to 4 decimal places, for display.", examples=["0.0585"]),
]


def micros(dollars: float | int | Decimal | None) -> int:
    """A figure in dollars as micro-dollars (None: 0), rounding half to even.

    >>> micros(0.058499999999999996), micros(None), micros(Decimal("1.25"))
    (58500, 0, 1250000)
    """
    return (
        0
        if dollars is None
        else usd_to_micros(
            Decimal(repr(dollars)) if isinstance(dollars, float) else Decimal(dollars)
        )
    )


def usd_string(amount_micros: int) -> str:
    """Micro-dollars as dollars for display, rounded to 4 places.

    >>> usd_string(58500), usd_string(0), usd_string(-1_234_567)
    ('0.0585', '0.0000', '-1.2346')
    """
    return str((Decimal(amount_micros) / PER_USD).quantize(DISPLAY_PLACES, ROUND_HALF_EVEN))


def with_money(value: Any) -> Any:
    """A JSON document with every stored amount shown as the API shows money.

    A numeric ``cost_usd`` (a stored dollar figure) becomes exact ``cost_micros`` beside a
    rounded ``cost_usd`` string; a ``cost_micros`` gains its ``cost_usd`` string.

    >>> with_money({"totals": {"cost_usd": 0.058499999999999996, "tokens": 10}})
    {'totals': {'cost_micros': 58500, 'cost_usd': '0.0585', 'tokens': 10}}
    """
    if isinstance(value, list):
        return [with_money(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "cost_usd":
            if "cost_micros" in value:
                continue  # shown from cost_micros
            number = isinstance(item, int | float | Decimal) and not isinstance(item, bool)
            if number or item is None:
                amount = None if item is None else micros(item)
                out["cost_micros"] = amount
                out["cost_usd"] = None if amount is None else usd_string(amount)
                continue
        elif key == "cost_micros" and isinstance(item, int):
            out[key] = item
            out["cost_usd"] = usd_string(item)
            continue
        out[key] = with_money(item) if isinstance(item, dict | list) else item
    return out
