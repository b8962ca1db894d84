"""One exception type for bad input, and the CLI wrapper that turns it into a clear non-zero exit."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("probekd")


class InputError(ValueError):
    """Bad input (file, row, parameter): the message names it and says what to change."""


class Unavailable(InputError):
    """An input this configuration cannot have (an encoder teacher's letter outputs, a student without hidden
    states): a consumer that can record it as unavailable does so instead of stopping; elsewhere it is an error."""


def exits_cleanly(command: F) -> F:
    """Run a typer command; an InputError becomes `error: <message>` on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InputError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]
