"""What the standalone command-line tools share: one-line errors, exit codes, atomic text files,
the flags every tool spells the same way, class-name files and the sample image.

One vocabulary: ``--model`` (alias ``--network``), ``--layer-name NAME [NAME ...]`` (repeatable),
``--method NAME [NAME ...]`` (alias ``--methods``, repeatable, read from the method registry),
``--weight-path``, ``--image-path``, ``--output-dir``, ``--device``, ``--class-names``,
``--reshape-transform``, ``--quiet`` and ``--debug`` are defined here, once.

Exit status: 0 success, 1 some inputs failed (the others were written), 2 bad arguments or an
error before any output, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning_cam.errors import one_line

__all__ = [
    "CLIError",
    "add_class_names_argument",
    "add_common_flags",
    "add_device_argument",
    "add_image_path_argument",
    "add_layer_argument",
    "add_method_argument",
    "add_model_argument",
    "add_output_dir_argument",
    "add_reshape_transform_argument",
    "add_weight_argument",
    "default_images",
    "method_names",
    "one_line",
    "output_folder",
    "read_class_names",
    "run_main",
    "selected_methods",
    "write_text_atomic",
]

class CLIError(Exception):
    """A bad input reported in one line (no stack trace), exit status 2."""


def output_folder(path: str) -> Path:
    """The output folder, created when missing; a :class:`CLIError` when it cannot be."""
    out_dir = Path(path).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CLIError(f"cannot create output folder {str(out_dir)!r}: {err}") from err
    return out_dir


def write_text_atomic(path: Path, text: str) -> None:
    """``path`` either complete or untouched (:func:`lightning_cam.tools.image_io.write_atomic`)."""
    from lightning_cam.tools.image_io import write_atomic

    write_atomic(path, text)


def method_names() -> list[str]:
    """The canonical names of the registered CAM methods (:data:`lightning_cam.methods.METHODS`)."""
    from lightning_cam.methods import METHODS

    return list(METHODS)


def _method(value: str) -> str:
    """``--method`` values: a registered name or alias, as its canonical name."""
    from lightning_cam.methods import method_name

    try:
        return method_name(value)
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(one_line(err)) from err


def add_method_argument(
    parser: argparse.ArgumentParser,
    what: str,
    default: Sequence[str],
    names: Sequence[str] | None = None,
) -> None:
    """``--method NAME [NAME ...]``: names and aliases of the method registry, checked when
    parsed (an unknown name exits with status 2 and the known names). ``what`` says what the
    tool draws per method; ``default``: the methods without ``--method``; ``names``: the
    methods the tool can use, for the help (default: every registered method)."""
    parser.add_argument(
        # SUPPRESS: no attribute without --method (and no "(default: None)" in the help)
        "--method", "--methods", dest="method", nargs="+", action="extend", type=_method,
        default=argparse.SUPPRESS, metavar="NAME",
        help=f"CAM method(s) for {what}, repeatable: {', '.join(names or method_names())} "
        f"(aliases accepted; default: {' '.join(default)}; alias of the flag: --methods)",
    )


def add_model_argument(
    parser: argparse.ArgumentParser | Any, help: str, several: bool = False
) -> None:
    """``--model NAME`` (alias ``--network``, the original tool's spelling), ``args.model``:
    a list of names with ``several`` (repeatable, several values each), else one name."""
    extra: dict[str, Any] = {"nargs": "+", "action": "extend"} if several else {}
    parser.add_argument("--model", "--network", dest="model", default=None, metavar="NAME",
                        help=f"{help} (alias: --network)", **extra)


def add_layer_argument(parser: argparse.ArgumentParser | Any, help: str) -> None:
    """``--layer-name NAME [NAME ...]``, repeatable (``--layer-name a b`` is ``--layer-name a
    --layer-name b``): ``args.layer_name``, a list of dotted module names, or ``None``."""
    parser.add_argument("--layer-name", nargs="+", action="extend", default=None,
                        metavar="NAME", help=f"{help} (repeatable, several names each)")


def add_weight_argument(
    parser: argparse.ArgumentParser | Any, help: str, several: bool = False
) -> None:
    """``--weight-path FILE``: ``args.weight_path``, a list with ``several`` (one per model)."""
    extra: dict[str, Any] = {"nargs": "+", "action": "extend"} if several else {}
    parser.add_argument("--weight-path", default=None, metavar="FILE", help=help, **extra)


def add_image_path_argument(parser: argparse.ArgumentParser | Any, default: Any = None) -> None:
    """``--image-path PATH [PATH ...]``: image files, folders or globs."""
    parser.add_argument(
        "--image-path", nargs="+", action="extend", default=default, metavar="PATH",
        help="image files, folders or globs (quote globs); default: a sample photo "
        "(skimage.data.chelsea(), written as 'chelsea')",
    )


def add_output_dir_argument(
    parser: argparse.ArgumentParser | Any, default: Any = "results",
    help: str = "output folder (default: results)",
) -> None:
    """``--output-dir DIR``: the output folder (:func:`output_folder`)."""
    parser.add_argument("--output-dir", default=default, metavar="DIR", help=help)


def add_device_argument(parser: argparse.ArgumentParser | Any, default: Any = "cpu") -> None:
    """``--device DEVICE``: where the model runs."""
    parser.add_argument("--device", default=default,
                        help="device, e.g. cpu, cuda, cuda:1 (default: cpu)")


def add_class_names_argument(parser: argparse.ArgumentParser | Any, help: str,
                             default: Any = None) -> None:
    """``--class-names FILE``: one class name per line (:func:`read_class_names`)."""
    parser.add_argument("--class-names", default=default, metavar="FILE",
                        help=f"text file with one class name per line; {help}")


def add_common_flags(parser: argparse.ArgumentParser | Any, quiet: str) -> None:
    """``--quiet`` (``quiet``: what it silences) and ``--debug``."""
    parser.add_argument("--quiet", action="store_true", help=quiet)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an unexpected error")


def reshape_transform_value(value: str) -> Any:
    """A ``--reshape-transform`` value: a layout name of
    :data:`lightning_cam.engine.layouts.LAYOUTS`
    (checked), or the dotted path ``package.module.function`` of a callable
    ``output -> (B, C, h, w)``, imported.

    Raises:
        argparse.ArgumentTypeError: Neither (exit status 2 with the reason and the valid names).
    """
    from lightning_cam.engine.layouts import LAYOUTS, check_reshape_transform

    if "." not in value:
        try:
            return check_reshape_transform(value, "--reshape-transform")
        except (ValueError, TypeError) as err:
            raise argparse.ArgumentTypeError(one_line(err)) from None
    module_name, _, attr = value.rpartition(".")
    expected = (
        f"expected one of {', '.join(LAYOUTS)} or the dotted path 'package.module.function' of "
        "a callable output -> (B, C, h, w)"
    )
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise argparse.ArgumentTypeError(
            f"--reshape-transform={value!r} does not import ({one_line(err)}); {expected}"
        ) from None
    if not callable(found):
        raise argparse.ArgumentTypeError(
            f"--reshape-transform={value!r} is a {type(found).__name__}, not a callable; {expected}"
        )
    return found


def add_reshape_transform_argument(
    parser: argparse.ArgumentParser | Any, default: Any = "auto"
) -> None:
    """``--reshape-transform LAYOUT``: how the layer's output reads as ``(B, C, h, w)``
    (:func:`lightning_cam.engine.layouts.check_reshape_transform`), checked when parsed."""
    from lightning_cam.engine.layouts import LAYOUTS

    parser.add_argument(
        "--reshape-transform", type=reshape_transform_value, default=default, metavar="LAYOUT",
        help=f"how the layer's output reads as (B, C, h, w): {', '.join(LAYOUTS)} (tokens: "
        "ViT-style (B, N, D) tokens folded into the patch grid; channels_last: (B, h, w, C)), or "
        "the dotted path package.module.function of a callable output -> (B, C, h, w) "
        "(default: auto, recognised from the model; ambiguous layouts are refused)",
    )


def selected_methods(args: argparse.Namespace, default: Sequence[str]) -> list[str]:
    """The ``--method`` values in order, without duplicates; ``default`` when none."""
    return list(dict.fromkeys(getattr(args, "method", None) or default))


def read_class_names(path: str) -> list[str]:
    """One class name per line (blank lines ignored).

    Raises:
        CLIError: The file is missing, unreadable or empty.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CLIError(f"class names file not found: {str(p)!r}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CLIError(f"cannot read class names file {str(p)!r}: {err}") from err
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise CLIError(f"class names file {str(p)!r} is empty; expected one name per line")
    return names


def default_images() -> dict[str, Any]:
    """The tools' sample image when no ``--image-path`` is given: ``skimage.data.chelsea()``."""
    import skimage.data

    return {"chelsea": skimage.data.chelsea()}


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
