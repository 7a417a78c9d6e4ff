"""What error dialogs say: plain words, never a Python class name.

A `LorkdError` carries a message written for the user (it names the file or field); an `OSError` says which file
and what the system refused. Anything else is a bug or an unforeseen case: the dialog says so in one plain
sentence and the type and traceback go to the log (the Monitor tab's log and stderr).
"""

from __future__ import annotations

import traceback

from core.errors import LorkdError

__all__ = ["details_of", "plain_message", "unexpected", "worker_message"]


def unexpected(doing: str = "") -> str:
    """The sentence an error dialog shows for an unexpected error, e.g. "Something unexpected went wrong while
    reading the image. Details are in the log." (`doing`: "reading the image")."""
    during = f" while {doing}" if doing else ""
    return f"Something unexpected went wrong{during}. Details are in the log."


def plain_message(error: BaseException, doing: str = "") -> str:
    """The dialog text for `error`: a LorkdError's own message, an OSError's file and reason, else `unexpected`."""
    if isinstance(error, LorkdError):
        return " ".join(str(error).split())
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    return unexpected(doing)


def worker_message(message: str, user_error: bool, doing: str = "") -> str:
    """The dialog text for a `Worker`'s `errored(message, details, user_error)`: the message of a user error (a
    LorkdError), else `unexpected` (the worker's message names the exception's type: it belongs in the log)."""
    return message if user_error else unexpected(doing)


def details_of(error: BaseException) -> str:
    """The traceback of `error`, for the log and a dialog's "Show Details"."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))
