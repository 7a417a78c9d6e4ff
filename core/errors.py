"""User-facing errors.

A `LorkdError` is a problem with the user's input (config, data file, checkpoint, bundle): the CLI
prints its message on one line and exits with code 2; the GUI shows it in a dialog. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class LorkdError(Exception):
    """An error the user can fix; the message names the file or field and the problem."""


class ConfigError(LorkdError):
    """Invalid configuration value. `loc` is the field's path as data (("train", "epochs"), ("tasks", 0, "name")),
    so a GUI can place the message next to its field; `source` names the config file when there is one. The text
    reads "SOURCE: train.epochs: must be >= 1, got -3"."""

    def __init__(self, message: str, loc: str | tuple | list | None = None, source: str | None = None) -> None:
        if isinstance(loc, str):
            loc = tuple(int(p) if p.isdigit() else p for p in loc.split(".") if p)
        self.message = message
        self.loc: tuple = tuple(loc or ())
        self.source = source
        super().__init__(message)

    @property
    def path(self) -> str:
        """The dotted field path ("tasks.0.name"), "" when the error is about the config as a whole."""
        return ".".join(str(p) for p in self.loc)

    def __str__(self) -> str:
        return ": ".join(part for part in (self.source, self.path, self.message) if part)

    def with_source(self, source: str) -> ConfigError:
        """The same error, naming the config file it came from."""
        return ConfigError(self.message, self.loc, source)


class DataError(LorkdError):
    """Unreadable or inconsistent data file; the message names the file."""


class CheckpointError(LorkdError):
    """A checkpoint that does not exist or does not fit the requested architecture."""


class BundleError(LorkdError):
    """An expert bundle that is missing files or does not match its metadata."""


class OutsideEnvelope(DataError):
    """`lorkd apply --strict`: the input lies outside what the expert was trained on (the message says how)."""

    def __init__(self, source: str, outside: list[str]) -> None:
        self.outside = list(outside)
        super().__init__(f"{source}: refused (--strict): outside what the expert was trained on: "
                         + "; ".join(self.outside))


class RunStopped(Exception):
    """Raised inside the engine when the user asked the run to stop (not an error)."""
