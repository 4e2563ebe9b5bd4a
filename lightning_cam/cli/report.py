"""``lightning-cam report OUT``: the HTML report of a dataset audit (a CAMWriter folder).

Writes ``OUT/report/index.html`` (:func:`lightning_cam.predict.report.write_report`): open it
in a browser, no server needed. A rerun remakes only the pictures of what changed.

Example:
    $ lightning-cam explain --data photos/ --output-dir audit --network resnet18
    $ lightning-cam report audit                  # the images: the --data folder, recorded
    $ lightning-cam report audit --images photos/ # or say where they are
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning_cam.cli.common import run_main

PROG = "lightning-cam report"


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``lightning-cam report``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write OUT/report/index.html: a self-contained HTML report of a CAMWriter "
        "folder (lightning-cam explain --data, or CAMWriter on trainer.predict).",
    )
    parser.add_argument("output_dir", metavar="OUT", help="the CAMWriter output folder")
    parser.add_argument(
        "--images",
        default=None,
        help="folder the image ids are relative to (default: the --data folder that "
        "`lightning-cam explain --data` recorded; without images the maps are shown alone)",
    )
    parser.add_argument(
        "--thumbnail-size", type=int, default=224,
        help="longest side of the pictures in pixels (default 224; never above the model input)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the report; returns the exit status."""
    from lightning_cam.predict.report import write_report

    path = write_report(args.output_dir, images=args.images, thumbnail_size=args.thumbnail_size)
    if not args.quiet:
        print(f"Report: {path} (open it in a browser: file://{path.resolve()})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightning-cam report``."""
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
