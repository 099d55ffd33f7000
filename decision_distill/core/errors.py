"""User-facing errors: one line naming the field and the fix, non-zero exit, no traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """Bad input from the user (params, scenario, data files). Printed as one line."""


EXIT_USER_ERROR = 2


def stage_main(fn: Callable[..., object]) -> Callable[..., None]:
    """Wrap a stage's main(): a UserError becomes one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            fn(*args, **kwargs)
        except UserError as err:
            message = " ".join(str(err).split())  # guarantee a single line
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper
