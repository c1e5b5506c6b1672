"""Money as integer micro-dollars: stored, summed and settled exactly; dollars at the edge.

One micro-dollar is a millionth of a dollar. Every durable money column (``cost_micros``)
and every sum is an integer count of them, so a thousand small costs add up to exactly
what a ledger settles. Conversions from dollars round half to even (banker's rounding: no
bias over many rows); prices per million tokens are micro-dollars per token, so a call's
cost is computed exactly and rounded once.

For people, dollars are printed rounded (:func:`usd_text`). In JSON, the exact integer
micros go beside a float of dollars derived from them (:func:`micros_to_usd`), which is the
nearest float to the exact amount and prints as such (``0.0585``, never
``0.058499999999999996``).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

#: Micro-dollars per dollar.
MICROS_PER_USD = 1_000_000


def usd_to_micros(usd: float | Decimal | str) -> int:
    """Dollars to integer micro-dollars, rounding half to even.

    Floats are read through their shortest decimal spelling, so ``0.0585`` is 58,500.

    >>> usd_to_micros(0.0585), usd_to_micros("0.0000025"), usd_to_micros("0.0000035")
    (58500, 2, 4)
    """
    value = usd if isinstance(usd, Decimal) else Decimal(str(usd))
    return int((value * MICROS_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def round_micros(micros: Decimal) -> int:
    """An exact (fractional) amount of micro-dollars rounded half to even."""
    return int(micros.to_integral_value(rounding=ROUND_HALF_EVEN))


def micros_to_usd(micros: int) -> float:
    """Micro-dollars as a float of dollars, for events and JSON figures read by people.

    The nearest float to the exact decimal: ``micros_to_usd(58500)`` is ``0.0585``.
    """
    return micros / MICROS_PER_USD


def usd_text(micros: int | None, places: int = 4) -> str:
    """Dollars for people: ``$0.0585``; ``—`` when the amount is unknown.

    >>> usd_text(58500), usd_text(1_234_567_890, 2), usd_text(None)
    ('$0.0585', '$1,234.57', '—')
    """
    if micros is None:
        return "—"
    dollars = Decimal(micros) / MICROS_PER_USD
    return f"${dollars:,.{places}f}"
