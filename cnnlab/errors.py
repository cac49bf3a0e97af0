"""The base of every error a user fixes by changing a command, a file or a folder."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class CnnlabError(RuntimeError):
    """Its message is the whole explanation (what is wrong and what to do), so the CLI prints it on one
    line without a traceback."""


class ConfigError(CnnlabError, ValueError):
    """A config value is unknown, of the wrong type or out of range."""


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Let a command print a :class:`CnnlabError` as one line (``<command>: error: ...``) and exit 1,
    instead of a traceback."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return main(*args, **kwargs)
        except CnnlabError as error:
            sys.exit(f"{Path(sys.argv[0]).name}: error: {error}")

    return wrapper
