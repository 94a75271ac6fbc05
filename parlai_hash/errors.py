"""User-facing errors: one line naming the option and the fix."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Optional, Type


class OptionError(ValueError):
    """A bad option value. Printed as one line by the ``parlai`` command."""

    def __init__(self, option: str, problem: str, fix: str):
        self.option = option
        super().__init__(f"{option}: {problem}; {fix}")


_previous_hook = sys.excepthook


def _one_line_hook(
    kind: Type[BaseException], value: BaseException, tb: Optional[TracebackType]
) -> None:
    if isinstance(value, OptionError):
        print(f"parlai-hash: error: {value}", file=sys.stderr)
    else:
        _previous_hook(kind, value, tb)


def install_excepthook() -> None:
    """Make an uncaught OptionError print one line instead of a traceback."""
    if sys.excepthook is not _one_line_hook:
        sys.excepthook = _one_line_hook
