"""Build the docs gallery: run every ``docs/gallery/<topic>.py`` and write the gallery page.

Each gallery script exposes ``main(out_dir: pathlib.Path) -> list[pathlib.Path]``: it writes its
pictures (PNG, GIF or JPEG; seeded, under a minute on a CPU) into ``out_dir`` and returns their
paths. This runner gives each script ``docs/gallery/img/<topic>/`` and writes
``docs/gallery/index.md``: a section per script (its docstring), its pictures, then the pictures
of the long runs (committed, with the command that remade them). The pictures are committed:
``make gallery`` remakes them, ``make test`` checks that every script runs and that the page
is the one this runner writes (``tests/test_gallery.py``).

Usage::

    python scripts/gallery.py                 # every script, then the page
    python scripts/gallery.py --only shapes   # one script, then the page
    python scripts/gallery.py --page          # the page only, from the pictures on disk
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
GALLERY = ROOT / "docs" / "gallery"
PICTURES = (".png", ".gif", ".jpg", ".jpeg")

#: Pictures of runs too long for a gallery script (minutes to half an hour on a CPU), committed
#: under docs/ with the command that made them.
LONG_RUNS = {
    "demo_overlay.png": "`make demo` (8 epochs), TensorBoard's `gradcam/backbone/overlay` at the "
    "last epoch: each probe labelled with the prediction, its probability and the true class",
    "detection_callback.jpg": "`lightning-cam fit --config shapes_detection` (10 epochs), "
    "TensorBoard's `gradcam/detector.backbone.body.layer3/detections`: a row per probe image, "
    "its detections, one Grad-CAM per detection with its box",
    "detection_methods.jpg": "`python benchmarks/detection_quality.py --ckpt ... --picture "
    "docs/detection_methods.jpg`: a row per detection, a column per method at "
    "`backbone.body.layer3`",
    "detectors_side_by_side.jpg": "`python examples/detectors_side_by_side.py` (about 45 min, "
    "most of it the RT-DETR): a Faster R-CNN, a YOLO and an RT-DETR trained from scratch on the "
    "same shapes, a column per detector, a row per detection with its map (a method among each "
    "family's best of benchmarks/detection_quality.md)",
    "vit_shapes.png": "`python examples/vit_shapes.py --out docs/vit_shapes.png` (40 epochs): a "
    "tiny ViT trained from scratch, Grad-CAM with the defaults (tokens folded)",
}


def scripts() -> dict[str, Path]:
    """The gallery scripts by topic (file stem), sorted."""
    return {p.stem: p for p in sorted(GALLERY.glob("*.py")) if not p.stem.startswith("_")}


def load(path: Path) -> ModuleType:
    """Import a gallery script by path (docs/gallery is no package)."""
    spec = importlib.util.spec_from_file_location(f"gallery_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(topic: str, out_dir: Path) -> list[Path]:
    """Run one script into ``out_dir``; check it returned pictures it wrote there."""
    written = [Path(p) for p in load(scripts()[topic]).main(out_dir)]
    if not written:
        raise RuntimeError(f"docs/gallery/{topic}.py: main() returned no picture")
    for path in written:
        if path.suffix.lower() not in PICTURES or not path.is_file():
            raise RuntimeError(f"docs/gallery/{topic}.py: {path} is not a picture it wrote")
        if path.resolve().parent != out_dir.resolve():
            raise RuntimeError(f"docs/gallery/{topic}.py: {path} is outside {out_dir}")
    return written


def _title_and_text(module_path: Path) -> tuple[str, str]:
    import ast

    doc = ast.get_docstring(ast.parse(module_path.read_text())) or module_path.stem
    title, _, text = doc.partition("\n")
    return title.strip().rstrip("."), text.strip()


def render_page() -> str:
    """The gallery page for the pictures now in ``docs/gallery/img/`` and ``LONG_RUNS``."""
    lines = [
        "# Gallery",
        "",
        "Pictures the project makes, remade by `make gallery` (`scripts/gallery.py` runs every",
        "`docs/gallery/<topic>.py`; this page is generated, do not edit it by hand).",
        "",
    ]
    for topic, path in scripts().items():
        title, text = _title_and_text(path)
        lines += [f"## {title}", "", text, "", f"Made by `docs/gallery/{topic}.py`.", ""]
        folder = GALLERY / "img" / topic
        for picture in sorted(folder.glob("*")) if folder.is_dir() else []:
            if picture.suffix.lower() in PICTURES:
                lines += [f"![{topic}: {picture.stem}](img/{topic}/{picture.name})", ""]
    lines += ["## Long runs", ""]
    for name, how in LONG_RUNS.items():
        lines += [f"![{Path(name).stem}](../{name})", "", f"*{how}.*", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=None, help="topics to run")
    parser.add_argument("--page", action="store_true", help="write the page only")
    args = parser.parse_args(argv)
    if not args.page:
        import torch

        torch.set_num_threads(1)  # seeded pictures; and fast on a shared machine
        for topic in args.only or list(scripts()):
            out_dir = GALLERY / "img" / topic
            out_dir.mkdir(parents=True, exist_ok=True)
            for old in out_dir.iterdir():
                old.unlink()
            for path in run(topic, out_dir):
                print(f"gallery: {path.relative_to(ROOT)}")
    (GALLERY / "index.md").write_text(render_page())
    print("gallery: docs/gallery/index.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
