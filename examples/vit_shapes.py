"""Train a tiny Vision Transformer on the shapes data and explain it with Grad-CAM.

A torchvision ``VisionTransformer`` (64 px images, 8 px patches: an 8 x 8 token grid, 4 blocks)
learns the shapes task on the CPU; lightning-cam then explains it with its defaults: the layer is
the last block's first norm (``encoder.layers.encoder_layer_3.ln_1``), the tokens are folded into
the patch grid (``reshape_transform="auto"``). The pointing game against the true masks says
whether the maps point at the shapes.

Run::

    python examples/vit_shapes.py --out docs/vit_shapes.png
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.vision_transformer import ConvStemConfig, VisionTransformer

import lightning_cam as lc
from lightning_cam.data.shapes import ShapesDataset
from lightning_cam.metrics import pointing_game
from lightning_cam.tools import viz


def tiny_vit(num_classes: int, image_size: int = 64) -> nn.Module:
    """4 blocks, width 96, 8 px patches embedded by a small convolutional stem (three stride-2
    3 x 3 convolutions instead of one 8 x 8 patch projection: Xiao et al., "Early Convolutions
    Help Transformers See Better", NeurIPS 2021), which a ViT this small needs to learn the
    task from scratch in minutes."""
    stem = [ConvStemConfig(out_channels=c, kernel_size=3, stride=2) for c in (24, 48, 96)]
    return VisionTransformer(
        image_size=image_size, patch_size=8, num_layers=4, num_heads=4, hidden_dim=96,
        mlp_dim=192, num_classes=num_classes, conv_stem_configs=stem,
    )


def train(model: nn.Module, data: ShapesDataset, epochs: int, lr: float = 1e-3) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    loader = DataLoader(data, batch_size=64, shuffle=True)
    steps = epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        total, correct = 0, 0
        for batch in loader:
            x, y = batch["image"], batch["label"]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
        print(f"epoch {epoch + 1}/{epochs}: train accuracy {correct / total:.2f}")
    model.eval()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--num-train", type=int, default=3000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--out", default="vit_shapes.png", help="picture of maps (PNG)")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    train_data = ShapesDataset(args.num_train, image_size=64, seed=0, clutter=False)
    val_data = ShapesDataset(args.num_val, image_size=64, seed=1, clutter=False)
    model = tiny_vit(train_data.num_classes)
    start = time.perf_counter()
    train(model, train_data, args.epochs)
    print(f"trained in {time.perf_counter() - start:.0f} s")

    val = next(iter(DataLoader(val_data, batch_size=len(val_data))))
    x, y, masks = val["image"], val["label"], val["mask"]
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    out = lc.explain(model, x, methods=("gradcam",), target=y)  # default layer and layout
    maps = out.cam()
    hits = float(pointing_game(maps, masks=masks).float().mean())
    print(f"layer {out.layers[0]}: val accuracy {accuracy:.2f}, pointing game {hits:.2f}")

    shown = range(8)
    rows = [
        [viz.to_uint8_image(x[i]) for i in shown],
        [viz.overlay(viz.to_uint8_image(x[i]), maps[i]) for i in shown],
    ]
    names = [train_data.class_names[int(y[i])] for i in shown]
    sheet = viz.annotate_sheet(rows, row_labels=["image", "Grad-CAM"], col_labels=names)
    viz.save_image(args.out, sheet)
    print(f"wrote {args.out}")
    return {"accuracy": accuracy, "pointing_game": hits, "layer": out.layers[0]}


if __name__ == "__main__":
    main()
