"""Mistakes a user can fix, and the one line that reports each.

A missing file, a flag out of range, a damaged run folder: the code that finds one raises a
ValueError (or a subclass: DataError, WeightsError, RunError, ...), an OSError or an
ImageLoadError whose message says what to do. The scripts print that message on one line and
exit with status 2; the Python API (clip_min/api.py) raises it as a :class:`UserError`.
"""

from __future__ import annotations

from contextlib import contextmanager

from .files import describe_os_error
from .images import ImageLoadError

# What a user can cause and fix. FloatingPointError: a run whose loss diverged (try a lower --lr).
USER_ERRORS = (ValueError, OSError, ImageLoadError, FloatingPointError)


def one_line(err: BaseException) -> str:
    """The message of a user error on one line; an OS error names the file and what to do."""
    if isinstance(err, OSError):
        return describe_os_error(err)
    return " ".join(str(err).split())


class UserError(Exception):
    """A mistake in what was asked (a path, an option, a file), with a one-line message saying what to do."""

    def _render_traceback_(self) -> list[str]:
        # IPython and Jupyter show these lines in place of a traceback: the message is the whole story.
        return [f"{type(self).__name__}: {self}"]


@contextmanager
def as_user_errors():
    """Re-raise a user error from inside the block as a :class:`UserError` with its one-line message."""
    try:
        yield
    except USER_ERRORS as err:
        raise UserError(one_line(err)) from None
