"""User-facing errors: one line that names the file, row or key, and a non-zero exit."""
import functools
import sys


class SPMLError(Exception):
    """Bad input from the user (a file, a row, a config key). Printed as one line."""


EXIT_CODE = 2


def exit_on_error(main):
    """Run `main`; an SPMLError becomes `error: <message>` on stderr and exit code 2.

    Only SPMLError is caught: any other exception is a bug and keeps its traceback.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SPMLError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(EXIT_CODE)

    return wrapper
