"""Errors users see. Each message says what was expected, what came, and what to do.

`UsageError` and its subclasses are bad input: the CLI turns them into exit code 2 and prints the
message without a traceback. Anything else escaping a command is a runtime failure (exit 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UsageError(Exception):
    """Bad input from the user: a flag, a study file, a data file or a storage location."""

    exit_code = 2


class ConfigError(UsageError):
    """A study file or flag that does not describe a valid search."""


class DataError(UsageError):
    """A dataset that cannot be found, read or used for the requested task."""


class StorageError(UsageError):
    """A storage location that cannot be opened, or a study that does not match the request."""


class WorkerFailure(Exception):
    """Worker processes died and the search missed its target; running it again resumes."""

    exit_code = 1


class StorageUnavailable(Exception):
    """A storage write kept failing with transient errors after every retry (exit code 1)."""

    exit_code = 1


class TrialFailure(Exception):
    """A trial that cannot produce a valid result; `reason` is stored as its `fail_reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DeadlineReached(Exception):
    """The search's `--timeout` ran out while a trial trained: the trial stops as PRUNED."""


class NonFiniteError(TrialFailure):
    """A loss or objective value became NaN or infinite."""

    def __init__(self, message: str) -> None:
        super().__init__("nonfinite", message)


def suggest(name: str, valid: Iterable[str]) -> str:
    """Return ' Did you mean "x"?' for the closest valid name, or an empty string."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f' Did you mean "{close[0]}"?' if close else ""


def unknown_name(kind: str, name: object, valid: Iterable[str], where: str = "", *,
                 error: type[UsageError] = ConfigError, shown: Iterable[str] | None = None) -> UsageError:
    """The one error for a name that is not one of `valid`: the valid names and the closest one.

    `shown` lists the valid names as the message prints them (with a description, say).
    """
    names = [str(v) for v in valid]
    place = f"{where}: " if where else ""
    listing = ", ".join(shown if shown is not None else names) or "none"
    return error(f'{place}unknown {kind} "{name}".{suggest(str(name), names)} '
                 f"Valid {kind} names: {listing}.")


def one_of(value: str, valid: Iterable[str], where: str, kind: str = "value") -> str:
    """`value` when it is one of `valid`; else the unknown-name error."""
    names = list(valid)
    if value not in names:
        raise unknown_name(kind, value, names, where)
    return value
