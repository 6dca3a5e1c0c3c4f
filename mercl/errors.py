"""Errors a user can act on.

Every problem with user input (a file, a config field, a CLI option) is raised as a
:class:`MerclError` whose message is one line naming the file or field and the
problem. The CLI prints it as ``mercl: error: <message>`` and exits with status 2,
without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class MerclError(Exception):
    """A one-line, user-facing error."""


class InputFileError(MerclError):
    """A file the user gave us is missing, truncated or has the wrong content."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # rebuild from (path, problem) when crossing a process boundary
        return type(self), (self.path, self.problem)


class ConfigError(MerclError):
    """A config field has a bad value; the message names the field."""

    def __init__(self, field: str, problem: str, source: str | Path | None = None):
        self.field = field
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}config field '{field}': {problem}")

    def __reduce__(self):
        return type(self), (self.field, self.problem, self.source)
