"""The project's user errors: one base type and one exit path.

Every problem a user can fix — a bad record, a missing file, an unusable checkpoint or option — is raised as a
``UserError`` (or a subclass) whose message says what is wrong, where, and what to do. ``utils.cli.run_main``
prints it and exits with code 2. Anything else that escapes is a bug: a traceback and exit code 1.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; ``str()`` is the whole message."""


class RecordError(UserError):
    """A record or input file that cannot be used; ``str()`` names it and says why."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


class BadInputError(UserError):
    """Bad records or labels; ``problems`` lists every one as 'where: reason'."""

    def __init__(self, problems: list[str], hint: str = ""):
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:200])
        more = f"\n  ... and {len(self.problems) - 200} more" if len(self.problems) > 200 else ""
        super().__init__(f"{len(self.problems)} bad record(s); nothing was written:\n  {shown}{more}"
                         + (f"\n{hint}" if hint else ""))


class CheckpointError(UserError):
    """A checkpoint that cannot be used (missing, unreadable, foreign, or holding code)."""


class OutputError(UserError):
    """A file could not be written (unwritable folder, full disk, ...); nothing was left behind."""


class TrainingDiverged(UserError):
    """The training loss (or the validation output) became non-finite: training stops at once."""
