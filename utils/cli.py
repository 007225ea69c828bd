"""How the programs end: a UserError prints one clear message and exits with code 2; anything else is a bug and
keeps its traceback (exit code 1)."""
from __future__ import annotations

import sys
from typing import Callable

from .errors import UserError


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    try:
        return main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
