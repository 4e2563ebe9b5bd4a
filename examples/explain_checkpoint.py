"""Load a trained lightning-cam checkpoint and explain a few images into a folder.

Run (after `make demo` or `lightning-cam fit --config configs/shapes.yaml`):
    python examples/explain_checkpoint.py --ckpt lightning_logs/shapes/version_0/checkpoints/*.ckpt

Writes, per image, the Grad-CAM and Grad-CAM++ overlays and guided Grad-CAM, plus one labelled
sheet, to --out (default: results/checkpoint).
"""

from __future__ import annotations

import argparse
import glob
import os

import torch

import lightning_cam as lc
from lightning_cam.data import ShapesDataset
from lightning_cam.models import ShapesClassifier
from lightning_cam.tools import viz


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint file (a glob picks the newest)")
    parser.add_argument("--out", default=os.path.join("results", "checkpoint"))
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=123, help="seed of the images to explain")
    args = parser.parse_args(argv)

    matches = sorted(glob.glob(args.ckpt), key=os.path.getmtime)
    if not matches:
        parser.error(f"no checkpoint matches {args.ckpt!r}")
    model = ShapesClassifier.load_from_checkpoint(matches[-1], map_location="cpu")
    data = ShapesDataset(num_samples=args.num_images, image_size=64, seed=args.seed)
    images = torch.stack([data[i]["image"] for i in range(len(data))])

    out = lc.explain(model, images, layer="backbone", guided_gradcam=True)
    names = model.class_names
    os.makedirs(args.out, exist_ok=True)
    written, rows, labels = [], [], []
    for i, image in enumerate(images):
        base = viz.to_uint8_image(image)
        cls = int(out.class_ids[i])
        prob = float(out.logits[i].softmax(0)[cls])
        row = [
            base,
            viz.overlay(base, out.cams["gradcam"]["backbone"][i]),
            viz.overlay(base, out.cams["gradcam++"]["backbone"][i]),
            viz.gradients_to_image(out.guided_cams["gradcam"]["backbone"][i]),
        ]
        for kind, picture in zip(("image", "cam", "cam++", "cam_gb"), row, strict=True):
            path = os.path.join(args.out, f"{i:02d}-{names[cls]}-{kind}.png")
            viz.save_image(path, picture)
            written.append(path)
        rows.append(row)
        labels.append(f"{names[cls]} {prob:.2f}")
    sheet = viz.annotate_sheet(
        rows, row_labels=labels, col_labels=["image", "Grad-CAM", "Grad-CAM++", "guided Grad-CAM"]
    )
    sheet_path = os.path.join(args.out, "sheet.png")
    viz.save_image(sheet_path, sheet)
    written.append(sheet_path)
    print(f"wrote {len(written)} files to {args.out}")
    return written


if __name__ == "__main__":
    main()
