"""``tally schema …``: the bus contract (AsyncAPI 3.0 and JSON Schemas) as files."""

from __future__ import annotations

from pathlib import Path

import typer

from tally.cli.common import EXIT_BAD_INPUT, JsonOpt, console, emit_json, fail

app = typer.Typer(
    help="The bus contract: AsyncAPI and JSON Schema documents.", no_args_is_help=True
)


@app.command("export")
def export(
    directory: Path = typer.Argument(..., help="Where to write asyncapi.yaml and schemas/."),
    as_json: bool = JsonOpt,
) -> None:
    """Write the AsyncAPI document and one JSON Schema per subject under DIRECTORY."""
    from tally.contract import export as write

    try:
        written = write(directory)
    except OSError as exc:
        fail(
            f"cannot write the contract under {directory}: {exc.strerror or exc}",
            code=EXIT_BAD_INPUT,
        )
    if as_json:
        emit_json({"directory": str(directory), "files": [str(p) for p in written]})
    else:
        console.print(f"wrote {len(written)} files under {directory}")
