"""``multiscale COMMAND ...`` (or ``python -m multiscale COMMAND ...``): the user tools.

Commands: ``validate`` (see :mod:`multiscale.validate`).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

COMMANDS = ("validate",)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: multiscale COMMAND [options]\n\ncommands:\n  validate   check a model's physics and tell the "
              "largest safe time step (multiscale validate --help)")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"multiscale: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from multiscale.cli import run_main
    from multiscale.validate.__main__ import main as validate_main

    return run_main(lambda args: validate_main(args, prog="multiscale validate"), rest, prog="multiscale validate")


if __name__ == "__main__":
    sys.exit(main())
