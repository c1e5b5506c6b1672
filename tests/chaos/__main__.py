"""``python -m tests.chaos [a b c d e] [--outage S]``: run the drills and print the table.

Exits 1 if any drill lost, duplicated or mis-totalled anything.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from tally.settings import TallySettings
from tests.chaos.deployment import Row, table
from tests.chaos.drills import DRILLS, workdir


async def main(chosen: list[str], outage_s: float) -> list[Row]:
    base = TallySettings()
    rows = []
    for key in chosen:
        for drill, kwargs in DRILLS[key]:
            if key == "b":
                kwargs = {**kwargs, "outage_s": outage_s}
            where = workdir()
            print(f"drill {key}: running (logs under {where})", flush=True)
            t = time.monotonic()
            rows.append(await drill(base, where, **kwargs))
            print(f"drill {key}: done in {time.monotonic() - t:.0f} s", flush=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("drills", nargs="*", help=f"some of {' '.join(DRILLS)} (default: all)")
    parser.add_argument("--outage", type=float, default=180.0, help="NATS outage (b), seconds")
    args = parser.parse_args()
    unknown = set(args.drills) - set(DRILLS)
    if unknown:
        parser.error(f"unknown drills {sorted(unknown)}; choose from {' '.join(DRILLS)}")
    rows = asyncio.run(main(args.drills or list(DRILLS), args.outage))
    print(table(rows))
    sys.exit(0 if all(r.clean for r in rows) else 1)
