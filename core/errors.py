"""User-facing errors.

A `LorkdError` is a problem with the user's input (config, data file, checkpoint, bundle): the CLI
prints its message on one line and exits with code 2; the GUI shows it in a dialog. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class LorkdError(Exception):
    """An error the user can fix; the message names the file or field and the problem."""


class ConfigError(LorkdError):
    """Invalid configuration value; the message names the field."""


class DataError(LorkdError):
    """Unreadable or inconsistent data file; the message names the file."""


class CheckpointError(LorkdError):
    """A checkpoint that does not exist or does not fit the requested architecture."""


class BundleError(LorkdError):
    """An expert bundle that is missing files or does not match its metadata."""


class RunStopped(Exception):
    """Raised inside the engine when the user asked the run to stop (not an error)."""
