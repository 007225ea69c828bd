"""How the programs start and end: one logging configuration per program, and one exit path — a UserError prints
one clear message and exits with code 2; anything else is a bug and keeps its traceback (exit code 1)."""
from __future__ import annotations

import logging
import sys
from typing import Callable, TextIO

from .errors import UserError

RESULT = 25  # between INFO and WARNING: what a run found (epoch metrics, cross-validation, files written)
logging.addLevelName(RESULT, "RESULT")


def configure_logging(stream: TextIO, quiet: bool = False, main_process: bool = True) -> None:
    """Messages of every module (``logging.getLogger(__name__)``) as plain lines on ``stream``: everything, or with
    ``quiet`` only results (``RESULT``: epoch metrics, cross-validation, files written) and warnings. Every process
    but the first of a distributed run says only errors (the first speaks for all). Progress bars are separate
    (tqdm, off with --quiet)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.ERROR if not main_process else RESULT if quiet else logging.INFO)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    try:
        return main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
