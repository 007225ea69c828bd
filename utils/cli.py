"""How the interfaces end: user errors print one clear message and exit with code 2, never a traceback."""
from __future__ import annotations

import sys
from typing import Callable

from dataloader.records import RecordError
from dataloader.sources import BadInputError

from .checkpoint import CheckpointError
from .io import OutputError


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    try:
        return main(argv)
    except (BadInputError, RecordError, CheckpointError, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # usage errors raised with a message
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 2
        raise
