"""Command-line plumbing shared by the runnable jobs in ``protocols/``.

Bad input to a command ends with one ``PROG: error: MESSAGE`` line on stderr and exit status 2,
as argparse does for a bad flag, never with a Python traceback: :func:`run_main` turns the
library's input errors (ValueError and its subclasses, missing or unwritable files, OpenMM's
refusals) into that line. A genuine bug (any other exception) still shows its traceback.

The argparse ``type=`` helpers below refuse impossible values (``--seed -1``, ``--cg-steps 0``,
``--out`` naming a file) before any work starts.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

#: exit status for bad input (argparse's)
USAGE_ERROR = 2


def error_line(prog: str, message) -> str:
    """One line, whatever the message: the last line a user sees starts with ``PROG: error:``."""
    return f"{prog}: error: " + " ".join(str(message).split())


#: a run that became unstable (NaN, or boiling: multiscale.openmm.overheating): its message names
#: the step and the fix (a shorter time step), so it ends as an error line, not a traceback
UNSTABLE_RUN_ERRORS = ("OverheatingError", "CGInstabilityError")


def run_main(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Call ``main(argv)``; report input errors as ``PROG: error: ...`` with exit status 2."""
    prog = prog or Path(sys.argv[0]).name
    try:
        return main(argv)
    except SystemExit as stop:
        if isinstance(stop.code, str):  # raise SystemExit("message"): an error, said the same way
            print(error_line(prog, stop.code), file=sys.stderr)
            return USAGE_ERROR
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    except (ValueError, FloatingPointError, FileNotFoundError, FileExistsError, IsADirectoryError,
            NotADirectoryError, PermissionError) as err:
        print(error_line(prog, err), file=sys.stderr)
        return USAGE_ERROR
    except Exception as err:  # noqa: BLE001
        if type(err).__name__ == "OpenMMException":  # OpenMM refuses an input (platform, NaN, ...)
            print(error_line(prog, f"OpenMM: {err}"), file=sys.stderr)
            return USAGE_ERROR
        if type(err).__name__ in UNSTABLE_RUN_ERRORS:  # by name: importing them would import torch
            print(error_line(prog, f"{err}. Finished stages are kept; a changed setting needs a new --out"),
                  file=sys.stderr)
            return USAGE_ERROR
        raise


def _number(text: str, kind: type, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {value:g}")
    return value


def output_dir(text: str) -> Path:
    """An output folder: it may exist (a job resumes into it), but not as a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} exists and is a file, not a folder; choose a folder for the outputs")
    return path


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{path}: no such file")
    return path


def choices_text(values: List[str]) -> str:
    return ", ".join(values)
