"""``lightning-cam explain``: the original Grad-CAM.pytorch tool's pictures from the shell.

For every image and network, six pictures named like the original tool's
(``{stem}-{network}-heatmap.jpg``, ``-cam.jpg``, ``-heatmap++.jpg``, ``-cam++.jpg``,
``-gb.jpg``, ``-cam_gb.jpg``), a ``summary.json`` of the run and, with several networks, one
comparison sheet per image (``{stem}-comparison.jpg``: rows = networks, columns = the
pictures) and ``comparison.md`` (markdown tables of the files). ``--method`` picks the CAM
methods of the registry (:data:`lightning_cam.methods.METHODS`; default Grad-CAM and
Grad-CAM++): every other method ``m`` writes ``{stem}-{network}-{m}-heatmap.jpg`` and
``-{m}-cam.jpg``, and gets its columns in the sheets. An image's pictures are written all or
none; every file is written atomically.

With ``--data DIR`` the same parser selects the dataset mode (:mod:`lightning_cam.cli.data`:
a folder on Lightning's predict loop); the flags of one mode (``_IMAGE_ONLY``, ``_DATA_ONLY``)
are refused in the other. ``--model`` has the alias ``--network``, ``--method`` the alias
``--methods`` (the flags of :mod:`lightning_cam.cli.common`).

Exit status: 0 when every image was explained; 1 when some images failed (each is reported by
name, the others are still explained); 2 on bad input (unknown network, unusable weights, an
unknown layer, a class id out of range, no images...), reported in one line on stderr.

Example:
    $ lightning-cam explain                                  # resnet50 on a sample photo
    $ lightning-cam explain --image-path photos/ --model vgg16,resnet50
    $ lightning-cam explain --image-path cat.jpg --network all --output-dir out  # an alias
    $ lightning-cam explain --image-path "data/*.png" --network resnet18 \\
          --weight-path resnet18_finetuned.pth --class-names classes.txt
    $ lightning-cam explain --network swin_t --layer-name features.6 \\
          --reshape-transform channels_last          # a (B, h, w, C) layer, read as such
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np

from lightning_cam.cli.common import (
    CLIError,
    default_images,
    one_line,
    output_folder,
    read_class_names,
    run_main,
    selected_methods,
    write_text_atomic,
)
from lightning_cam.cli.explain_args import DEFAULT_NETWORK, PROG, build_parser, resolve_mode

__all__ = [
    "build_parser",
    "comparison_markdown",
    "main",
    "read_class_names",
    "resolve_mode",
    "resolve_networks",
    "run",
    "run_images",
    "write_comparison_sheet",
]

SUMMARY_FILE = "summary.json"
MARKDOWN_FILE = "comparison.md"
SHEET_TILE = 256  # longest side of a picture in a comparison sheet (never upscaled)

# ----------------------------------------------------------------------------- parsing


def _split_names(values: Sequence[str] | None) -> list[str]:
    names: list[str] = []
    for value in values or []:
        for part in value.split(","):
            part = part.strip()
            if part:
                names.append(part)
    return names


def resolve_networks(values: Sequence[str] | None) -> list[str]:
    """The requested network names (``all`` = the seed networks), checked, without duplicates.

    Names are kept as written (lower case, ``-`` read as ``_``): they appear in file names.
    """
    from lightning_cam import zoo

    names: list[str] = []
    for name in _split_names(values):
        if ":" in name:  # timm:<name>, hf:<folder>: kept as written, checked when built
            if name not in names:
                names.append(name)
            continue
        key = name.lower().replace("-", "_")
        expanded = list(zoo.SEED_NETWORKS) if key == "all" else [key]
        for n in expanded:
            zoo.resolve_network(n)  # UnknownNetworkError lists the valid names
            if n not in names:
                names.append(n)
    return names


def _plan(args: argparse.Namespace) -> list[tuple[str | None, str | None]]:
    """``(network, weight path)`` pairs to run."""
    from lightning_cam import zoo

    weights = list(args.weight_path or [])
    backbone = None
    if len(weights) == 1 and weights[0].lower() != "default":
        backbone = zoo.checkpoint_backbone(weights[0])
    if backbone is not None and args.model:
        # A lightning-cam checkpoint names its own network; build_classifier checks the name.
        networks: list[str | None] = list(_split_names(args.model))
    else:
        networks = list(resolve_networks(args.model))
    if not networks:
        if len(weights) > 1:
            raise CLIError(
                f"{len(weights)} weight files given without --model; name one network per file"
            )
        if backbone is not None:
            networks = [None]  # a lightning-cam checkpoint names its own network
        else:
            networks = [DEFAULT_NETWORK]
    if weights and len(weights) != len(networks):
        shown = ", ".join(str(n) for n in networks)
        raise CLIError(
            f"{len(weights)} weight file(s) for {len(networks)} network(s) ({shown}); give one "
            "--weight-path per network, in the same order ('default' for torchvision's weights)"
        )
    paths: list[str | None] = [
        None if w.lower() == "default" else w for w in weights
    ] or [None] * len(networks)
    return list(zip(networks, paths, strict=True))


# ----------------------------------------------------------------------------- progress


class _Progress:
    """tqdm when installed, else a plain counter on stderr."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self.desc = desc
        self.count = 0
        self._bar: Any = None
        if enabled and importlib.util.find_spec("tqdm") is not None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="image", file=sys.stderr,
                             dynamic_ncols=True)

    def update(self) -> None:
        self.count += 1
        if self._bar is not None:
            self._bar.update(1)
        elif self.enabled:
            end = "\n" if self.count == self.total else ""
            print(f"\r{self.desc}: {self.count}/{self.total} images", end=end, file=sys.stderr,
                  flush=True)

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            if self.enabled and 0 < self.count < self.total:
                print(file=sys.stderr)
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ----------------------------------------------------------------------------- outputs


def _tile(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def _tile_size(shape: tuple[int, ...]) -> tuple[int, int]:
    h, w = shape[:2]
    scale = min(1.0, SHEET_TILE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def write_comparison_sheet(
    output_dir: Path,
    stem: str,
    networks: Sequence[str],
    files: dict[str, dict[str, str]],
    shape: tuple[int, ...],
    keys: Sequence[str] | None = None,
) -> str:
    """``{stem}-comparison.jpg``: rows = networks, columns = the pictures (``keys``, default the
    six of the default methods; :func:`lightning_cam.tools.classifier.output_keys`), labelled.

    Pictures are read back from ``files[network][key]`` (names in ``output_dir``); a network
    that failed on the image gets a blank row.
    """
    from lightning_cam.tools import image_io, viz
    from lightning_cam.tools.classifier import OUTPUT_KEYS

    columns = list(keys) if keys is not None else list(OUTPUT_KEYS)
    size = _tile_size(shape)
    blank = np.full((*size, 3), 255, np.uint8)
    rows = []
    for net in networks:
        row = []
        for key in columns:
            name = files.get(net, {}).get(key)
            row.append(_tile(image_io.load_image(output_dir / name), size) if name else blank)
        rows.append(row)
    sheet = viz.annotate_sheet(rows, row_labels=list(networks), col_labels=columns)
    name = f"{stem}-comparison.jpg"
    image_io.save_image(output_dir / name, sheet)
    return name


def comparison_markdown(
    stems: Sequence[tuple[str, str]],
    networks: Sequence[str],
    files: dict[str, dict[str, dict[str, str]]],
    sheets: dict[str, str],
    keys: Sequence[str] | None = None,
) -> str:
    """Markdown tables of the pictures (one per image; rows = networks, columns = ``keys``,
    default the six of the default methods), as in the original project's README."""
    from lightning_cam.tools.classifier import OUTPUT_KEYS

    columns = list(keys) if keys is not None else list(OUTPUT_KEYS)
    lines = ["# lightning-cam explain: comparison", ""]
    for stem, label in stems:
        lines += [f"## {stem}", "", f"Image: `{label}`", ""]
        if stem in sheets:
            lines += [f"![{stem} comparison]({quote(sheets[stem])})", ""]
        lines.append("| network | " + " | ".join(columns) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        for net in networks:
            got = files.get(stem, {}).get(net, {})
            cells = [
                f"![{key}]({quote(got[key])})" if key in got else "failed" for key in columns
            ]
            lines.append(f"| {net} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def _run_error(explainer: Any, err: BaseException) -> str:
    """One line for an error of the model or the engine (it concerns every image)."""
    hint = ""
    if isinstance(err, RuntimeError):  # the network itself failed, usually on the input size
        size = explainer.image_size
        hint = f" (input size {size}x{size}; try another --image-size)"
    return f"{explainer.network}: {one_line(err)}{hint}"


def _check_image_args(args: argparse.Namespace) -> list[str]:
    """Step 1: the numbers checked; the methods to run (the registry's default when none)."""
    from lightning_cam.methods import DEFAULT_METHODS

    for flag, value, minimum in (("--batch-size", args.batch_size, 1),
                                 ("--image-size", args.image_size, 8)):
        if value is not None and value < minimum:
            raise CLIError(f"{flag} must be >= {minimum}, got {value}")
    return selected_methods(args, DEFAULT_METHODS)


def _build_explainers(args: argparse.Namespace, methods: list[str]) -> list[Any]:
    """Step 2: every network built and checked on a blank image, before anything is written."""
    from lightning_cam.tools.classifier import ClassifierExplainer

    plan = _plan(args)
    class_names = read_class_names(args.class_names) if args.class_names else None
    layer = args.layer_name[0] if args.layer_name else None
    explainers = []
    for network, weight_path in plan:
        explainer = None
        try:
            explainer = ClassifierExplainer(
                network, layer=layer, target=args.target, weight_path=weight_path,
                image_size=args.image_size, device=args.device, class_names=class_names,
                methods=methods, reshape_transform=args.reshape_transform,
            )
            explainer.check()
        except (ValueError, RuntimeError, TypeError) as err:
            if explainer is None:
                prefix = f"{network}: " if len(plan) > 1 and network else ""
                raise CLIError(prefix + one_line(err)) from err
            raise CLIError(_run_error(explainer, err)) from err
        explainers.append(explainer)
    return explainers


class _Outputs:
    """What the run wrote: per-image records, failures, files and image shapes."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.failures: list[Any] = []
        self.files: dict[str, dict[str, dict[str, str]]] = {}  # stem -> network -> key -> file
        self.shapes: dict[str, tuple[int, ...]] = {}


def _explain_images(
    args: argparse.Namespace, explainers: Sequence[Any], sources: Sequence[Any], out_dir: Path
) -> _Outputs:
    """Step 3: every image through every network, failures reported and kept."""
    from lightning_cam.tools.classifier import ClassifierExplanation, ImageFailure

    outputs = _Outputs()
    for explainer in explainers:
        progress = _Progress(len(sources), explainer.network, enabled=not args.quiet)
        try:
            for result in explainer.iter_explain(
                sources, batch_size=args.batch_size, output_dir=out_dir, errors="report"
            ):
                if isinstance(result, ImageFailure):
                    outputs.failures.append(result)
                    progress.write(
                        f"{PROG}: {result.network}: failed on {result.source or result.image}: "
                        f"{result.error}"
                    )
                else:
                    assert isinstance(result, ClassifierExplanation)
                    record = result.to_dict()
                    record["weights"] = explainer.meta.weights
                    outputs.records.append(record)
                    outputs.files.setdefault(result.image, {})[result.network] = result.files
                    outputs.shapes[result.image] = result.original.shape
                progress.update()
        except (ValueError, RuntimeError, TypeError) as err:
            raise CLIError(_run_error(explainer, err)) from err
        finally:
            progress.close()
    return outputs


def _write_comparisons(
    out_dir: Path, sources: Sequence[Any], networks: Sequence[str], outputs: _Outputs,
    keys: Sequence[str],
) -> dict[str, str]:
    """Step 4 (several networks): a comparison sheet per image and ``comparison.md``."""
    files = outputs.files
    sheets: dict[str, str] = {}
    for src in sources:
        if src.name in files:
            try:
                sheets[src.name] = write_comparison_sheet(
                    out_dir, src.name, networks, files[src.name], outputs.shapes[src.name], keys
                )
            except (OSError, ValueError) as err:
                print(f"{PROG}: cannot write the comparison sheet of {src.label}: "
                      f"{one_line(err)}", file=sys.stderr)
    stems = [(s.name, s.label) for s in sources if s.name in files]
    markdown = comparison_markdown(stems, networks, files, sheets, keys)
    write_text_atomic(out_dir / MARKDOWN_FILE, markdown)
    return sheets


def _write_summary(
    out_dir: Path, methods: list[str], explainers: Sequence[Any], outputs: _Outputs,
    sheets: dict[str, str],
) -> None:
    """Step 5: ``summary.json``."""
    summary = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "output_dir": str(out_dir),
        "methods": methods,
        "networks": [
            {"network": e.network, "arch": e.meta.arch, "weights": e.meta.weights,
             "layer": e.layer, "image_size": e.image_size,
             "reshape_transform": e.reshape_transform_name}
            for e in explainers
        ],
        "results": outputs.records,
        "failures": [f.to_dict() for f in outputs.failures],
        "comparison_sheets": sheets,
    }
    write_text_atomic(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def run_images(args: argparse.Namespace) -> int:
    """``lightning-cam explain`` on images (parsed arguments, mode resolved); the exit status."""
    from lightning_cam.tools.classifier import output_keys
    from lightning_cam.tools.image_io import collect_images

    methods = _check_image_args(args)
    explainers = _build_explainers(args, methods)
    sources = collect_images(args.image_path if args.image_path else default_images())
    out_dir = output_folder(args.output_dir)
    outputs = _explain_images(args, explainers, sources, out_dir)
    sheets: dict[str, str] = {}
    if len(explainers) > 1:
        networks = [e.network for e in explainers]
        sheets = _write_comparisons(out_dir, sources, networks, outputs, output_keys(methods))
    _write_summary(out_dir, methods, explainers, outputs, sheets)
    if outputs.failures:
        names = sorted({f.source or f.image for f in outputs.failures})
        print(f"{PROG}: {len(names)} image(s) failed: {', '.join(names)}", file=sys.stderr)
    if not args.quiet:
        print(f"{len(outputs.records)} explanation(s) ({len(sources)} image(s) x "
              f"{len(explainers)} network(s)) written to {out_dir}")
    return 1 if outputs.failures else 0


def run(args: argparse.Namespace) -> int:
    """Run ``lightning-cam explain`` with parsed arguments (:func:`build_parser`): images, or
    with ``--data`` a dataset (:func:`lightning_cam.cli.data.run`); the exit status.

    Raises:
        CLIError, ValueError, OSError, RuntimeError: Bad input (reported by :func:`main`).
    """
    if resolve_mode(args) == "data":
        from lightning_cam.cli.data import run as run_dataset

        return run_dataset(args)
    return run_images(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightning-cam explain`` (and ``explain --data``); the exit status."""
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
