"""The ``coopsync`` command: tokens, secret keys, workers, resyncs and a look at the stores."""

from __future__ import annotations


def main() -> None:  # console script entry point
    from app.cli import keys, ops, tokens  # noqa: F401 - their commands register on the Typer app
    from app.cli.base import cli
    from app.crypto import SecretKeyError

    try:
        cli()
    except SecretKeyError as exc:  # no key, a bad key, a value no key opens: one line, no traceback
        import sys

        print(f"coopsync: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
