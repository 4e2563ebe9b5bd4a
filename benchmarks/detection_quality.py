"""Which CAM method and layer localise a detector's detections: measured per detection.

On the shapes detection data (validation split, seeded), every detection of the trained
detector that matches a true object (IoU >= 0.5, same class) is explained with every method of
the registry that explains detections (``--methods``; those that explain classes only are left
out) at every layer (``--layers``; ``roi_heads.box_roi_pool`` = the RoI-level maps), all from one
:class:`~lightning_cam.detection.DetectionExplainer` call per image, and its map is scored
against the true object:

* **pointing game**: the map's maximum lies on the object (its mask, no tolerance);
* **energy**: the share of the map's mass on the object's mask (energy pointing game);
* **in box**: the share of the map's mass inside the object's box;
* **on others**: the share of the map's mass on the *other* objects of the image (the failure
  the README's detection picture shows: a detection's map lighting up its siblings).

Run (from the repository root, with a checkpoint of ``configs/shapes_detection.yaml``)::

    python benchmarks/detection_quality.py \\
        --ckpt lightning_logs/shapes_detection/version_0/checkpoints/*.ckpt
    python benchmarks/detection_quality.py --ckpt ... --picture docs/detection_methods.jpg

The markdown table is printed and written to ``--out`` (default
``benchmarks/detection_quality.md``); ``--picture`` also draws a few detections' maps, a column
per method at ``--picture-layer``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from lightning_cam.data.detection import ShapesDetectionDataModule  # noqa: E402
from lightning_cam.detection import (  # noqa: E402
    ROI_LAYER,
    DetectionExplainer,
    build_detector,
    configure_detector,
    detection_scores,
    match_detections,
)
from lightning_cam.detection.base import detection_methods  # noqa: E402
from lightning_cam.detection.render import (  # noqa: E402
    detection_heatmap,
    draw_detections,
    scaled_result,
)
from lightning_cam.metrics import energy_pointing_game, pointing_game  # noqa: E402
from lightning_cam.tools import image_io, viz  # noqa: E402

DEFAULT_LAYERS = ("backbone.body.layer1", "backbone.body.layer2", "backbone.body.layer3",
                  ROI_LAYER)
METRICS = ("pointing", "energy", "in_box", "on_others")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="ShapesDetector checkpoint")
    p.add_argument("--methods", nargs="+", default=None,
                   help="methods (default: every method of the registry that explains "
                   "detections)")
    p.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS))
    p.add_argument("--num-images", type=int, default=100, help="validation images")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "detection_quality.md"))
    p.add_argument("--picture", default=None, help="also draw a picture (jpg/png)")
    p.add_argument("--picture-layer", default="backbone.body.layer3")
    p.add_argument("--picture-images", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def _val_data(num: int) -> Any:
    """The validation split of ``configs/shapes_detection.yaml`` (same seed), with masks."""
    dm = ShapesDetectionDataModule(num_val=num, image_size=128, masks=True)
    return dm.dataset("val")


def score_result(result: Any, target: dict[str, torch.Tensor], methods: list[str],
                 layers: list[str], scores: dict[tuple[str, str, str], list[float]]) -> int:
    """Add the metrics of the matched detections of one image to ``scores``; returns how many
    detections matched."""
    gt_boxes, gt_labels = target["boxes"].float(), target["labels"]
    masks = target["masks"].bool()
    match = match_detections(result.boxes, result.scores, gt_boxes, result.labels, gt_labels)
    sel = torch.nonzero(match >= 0)[:, 0]
    if sel.numel() == 0:
        return 0
    obj = match[sel]
    own_masks = masks[obj]
    others = torch.stack([masks[[j for j in range(len(masks)) if j != i]].any(0)
                          if len(masks) > 1 else torch.zeros_like(masks[0]) for i in obj.tolist()])
    for m in methods:
        for layer in layers:
            maps = result.map(m, layer)[sel].float()
            hits = pointing_game(maps, masks=own_masks)
            energy = energy_pointing_game(maps, masks=own_masks)
            in_box = energy_pointing_game(maps, boxes=gt_boxes[obj])
            total = maps.flatten(1).sum(1).clamp_min(1e-12)
            on_others = (maps * others).flatten(1).sum(1) / total
            for name, v in zip(METRICS, (hits, energy, in_box, on_others), strict=True):
                scores[(m, layer, name)].extend(v.tolist())
    return int(sel.numel())


def add_scoring_args(p: argparse.ArgumentParser) -> None:
    """The options the YOLO and RT-DETR tables share: images, selection, threads, the file."""
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "detection_quality.md"))


@dataclass
class DatasetScores:
    """The metrics of every matched detection of a validation set (``scores``, per method,
    layer and metric), the counts, the detector's AP50 / recall50 and the seconds taken."""

    scores: dict[tuple[str, str, str], list[float]]
    matched: int
    detections: int
    quality: dict[str, Any]
    seconds: float


def score_images(explainer: Any, data: Any, num: int, methods: list[str], layers: list[str],
                 detect: Any = None, label_offset: int = 0) -> DatasetScores:
    """Explain and score the first ``num`` images of ``data`` (:func:`score_result`). AP50 is
    of ``detect(image)``'s detections (every detection) or, without it, of the explained ones;
    ``label_offset`` is taken off the true labels (1: a model whose ids have no background)."""
    scores: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    matched = detections = 0
    preds, targets = [], []
    start = time.perf_counter()
    for i in range(num):
        image, target = data[i]
        target = {**target, "labels": target["labels"] - label_offset}
        result = explainer(image)
        detections += len(result)
        matched += score_result(result, target, methods, layers, scores)
        preds.append(detect(image) if detect is not None else
                     {"boxes": result.boxes, "scores": result.scores, "labels": result.labels})
        targets.append(target)
    return DatasetScores(scores, matched, detections, detection_scores(preds, targets),
                         time.perf_counter() - start)


def replace_section(path: Path, section: str, text: str) -> None:
    """Write ``text`` (starting with its ``section`` heading) into the markdown file ``path``
    in place of that section (up to the next ``## `` heading), or at its end; the other
    sections are kept."""
    old = path.read_text() if path.exists() else ""
    start = old.find(f"\n{section}")
    if start < 0:
        path.write_text((old.rstrip("\n") + "\n\n" if old else "") + text)
        return
    end = old.find("\n## ", start + 1)
    rest = old[end:] if end >= 0 else ""
    path.write_text(old[:start].rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n" + rest)


def publish(out: str, section: str, run: DatasetScores, methods: list[str], layers: list[str],
            header: list[str]) -> None:
    """The table of ``run`` under ``header``: printed and written as ``section`` of ``out``."""
    text = markdown(run.scores, methods, layers, header)
    replace_section(Path(out), section, text)
    print(text)


def markdown(scores: dict[tuple[str, str, str], list[float]], methods: list[str],
             layers: list[str], header: list[str]) -> str:
    lines = [*header, "",
             "| method | layer | pointing game | energy (mask) | energy (box) | on other objects |",
             "|---|---|---|---|---|---|"]
    best: dict[str, tuple[float, str, str]] = {}
    for m in methods:
        for layer in layers:
            vals = [float(np.mean(scores[(m, layer, k)])) for k in METRICS]
            for k, v in zip(METRICS, vals, strict=True):
                better = -v if k == "on_others" else v
                if k not in best or better > best[k][0]:
                    best[k] = (better, m, layer)
            lines.append(f"| {m} | `{layer}` | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    lines += ["", "Best per column: " + "; ".join(
        f"{k}: {m} at `{layer}`" for k, (_, m, layer) in best.items()) + "."]
    return "\n".join(lines) + "\n"


def picture(path: str, data: Any, explainer: DetectionExplainer, methods: list[str],
            layer: str, indices: list[int]) -> None:
    """Rows: the matched detections of a few images; columns: the detection, then its map for
    every method at ``layer``."""
    rows, labels = [], []
    for i in indices:
        image, target = data[i]
        result = explainer(image)
        match = match_detections(result.boxes, result.scores, target["boxes"].float(),
                                 result.labels, target["labels"])
        big = np.kron(viz.to_uint8_image(image), np.ones((2, 2, 1), np.uint8))  # legible
        res = scaled_result(result, 2.0)
        for k in torch.nonzero(match >= 0)[:, 0].tolist()[:2]:
            row = [draw_detections(big, res, [k])]
            row += [detection_heatmap(big, res, k, m, layer) for m in methods]
            rows.append(row)
            labels.append(f"{i}/{k}: {res.label_names()[k]}")
    sheet = viz.annotate_sheet(rows, row_labels=labels, col_labels=["detection", *methods])
    image_io.save_image(path, sheet)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    methods = list(args.methods or detection_methods())
    detector, meta = build_detector(None, args.ckpt)
    configure_detector(detector, args.score_threshold, args.top_k)
    layers = list(args.layers)
    explainer = DetectionExplainer(
        detector, layer=layers, methods=methods, score_threshold=args.score_threshold,
        top_k=args.top_k, class_names=meta.categories,
    )
    data = _val_data(args.num_images)
    scores: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    matched = detections = 0
    preds, targets = [], []
    start = time.perf_counter()
    for i in range(min(args.num_images, len(data))):
        image, target = data[i]
        result = explainer(image)
        detections += len(result)
        matched += score_result(result, target, methods, explainer.result_layers, scores)
        with torch.no_grad():
            preds.append(detector([image])[0])
        targets.append(target)
    elapsed = time.perf_counter() - start
    quality = detection_scores(preds, targets)
    header = [
        f"# Detection explanations: which method and layer localise a detection "
        f"({datetime.date.today().isoformat()})",
        "",
        f"Detector: `{args.ckpt}` ({meta.name}); validation images of the shapes data: "
        f"{min(args.num_images, len(data))} (AP50 {quality['map']:.3f}, recall50 "
        f"{quality['recall']:.3f}). Detections with score >= {args.score_threshold}, at most "
        f"{args.top_k} per image: {detections}, of which {matched} match a true object "
        f"(IoU >= 0.5, same class) and are scored. {elapsed:.0f} s for all methods and layers "
        f"({args.threads} thread(s)). RoI maps (`{ROI_LAYER}`) are pasted into the detection's "
        "proposal box, so they cannot land on another object by construction.",
        "",
        "Columns: pointing game (the map's maximum on the object's mask), energy (share of the "
        "map on the object's mask; on its box), and the share of the map on the *other* objects "
        "of the image (lower is better).",
    ]
    text = markdown(scores, methods, explainer.result_layers, header)
    out = Path(args.out)
    old = out.read_text() if out.exists() else ""
    later = old[old.find("\n## "):] if "\n## " in old else ""  # the YOLO, RT-DETR sections
    out.write_text(text.rstrip("\n") + "\n" + later)
    print(text)
    if args.picture:
        picture(args.picture, data, explainer, methods, args.picture_layer, args.picture_images)
        print(f"picture: {args.picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
