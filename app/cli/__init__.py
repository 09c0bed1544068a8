"""The ``coopsync`` command: tokens, workers, resyncs and a look at the stores."""

from __future__ import annotations


def main() -> None:  # console script entry point
    from app.cli import ops, tokens  # noqa: F401 - their commands register on the Typer app
    from app.cli.base import cli

    cli()
