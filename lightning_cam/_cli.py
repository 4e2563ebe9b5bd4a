"""What the standalone command-line tools share: one-line errors, exit codes, atomic text files.

Exit status: 0 success, 1 some inputs failed (the others were written), 2 bad arguments or an
error before any output, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path


class CLIError(Exception):
    """A bad input reported in one line (no stack trace), exit status 2."""


def one_line(err: BaseException) -> str:
    """The error's message on one line (its type name when it has none)."""
    text = " ".join(str(err).split())
    return text if text else type(err).__name__


def output_folder(path: str) -> Path:
    """The output folder, created when missing; a :class:`CLIError` when it cannot be."""
    out_dir = Path(path).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CLIError(f"cannot create output folder {str(out_dir)!r}: {err}") from err
    return out_dir


def write_text_atomic(path: Path, text: str) -> None:
    """``path`` either complete or untouched (:func:`lightning_cam.viz.write_atomic`)."""
    from lightning_cam import viz

    viz.write_atomic(path, text)


def run_main(
    prog: str,
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv`` and ``run``; any error becomes one line on stderr and exit status 2
    (``--debug`` prints the traceback too), Ctrl-C exit status 130."""
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI reports every error in one line
        if getattr(args, "debug", False):
            traceback.print_exc()
        expected = isinstance(err, (CLIError, ValueError, OSError, RuntimeError, TypeError))
        hint = "" if expected or getattr(args, "debug", False) else (
            " (run with --debug for the traceback)"
        )
        print(f"{prog}: error: {one_line(err)}{hint}", file=sys.stderr)
        return 2
