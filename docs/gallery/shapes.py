"""The shapes classifier: every registered method, guided backprop and guided Grad-CAM.

The compact CNN of the main job (`lightning_cam.models.ShapesClassifier`), trained for a few
seconds on the synthetic shapes data (seeded), explains 6 validation images: one column per
method of the registry, read from `lightning_cam.methods.METHODS` (a new method gets its column),
then guided backprop and guided Grad-CAM; each row is labelled with the true class, each image
with the predicted one. CAM refuses this head (global *max* pooling, not average): its column
says so instead of showing a wrong map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

import lightning_cam as lc
from lightning_cam.data import ShapesDataModule
from lightning_cam.methods import METHODS
from lightning_cam.models import ShapesClassifier
from lightning_cam.tools import viz

NUM_IMAGES = 6


def train() -> tuple[ShapesClassifier, ShapesDataModule]:
    """The default classifier after a short seeded training (6 epochs of 1,000 images)."""
    pl.seed_everything(0, workers=True, verbose=False)
    data = ShapesDataModule(num_train=1000, num_val=64, batch_size=32, seed=0)
    model = ShapesClassifier(class_names=["circle", "square", "triangle", "star"])
    trainer = pl.Trainer(
        max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, deterministic=True,
    )
    trainer.fit(model, data)
    return model.eval(), data


def method_maps(model: ShapesClassifier, images: torch.Tensor) -> dict[str, torch.Tensor | str]:
    """Each registered method's maps ``(N, H, W)`` at ``backbone``, or the reason it refused
    (CAM refuses this head: it pools with global *max*, not average)."""
    maps: dict[str, torch.Tensor | str] = {}
    for name in METHODS:
        try:
            maps[name] = lc.explain(model, images, "backbone", methods=[name]).cams[name][
                "backbone"]
        except ValueError as err:
            maps[name] = str(err).split(",")[0]
    return maps


def methods_sheet(
    model: ShapesClassifier, images: torch.Tensor, labels: torch.Tensor
) -> np.ndarray:
    """One row per image: the image, one overlay per registered method, guided pictures."""
    names = list(METHODS)
    maps = method_maps(model, images)
    out = lc.explain(model, images, layer="backbone", methods=["gradcam"], guided_gradcam=True)
    classes = model.hparams["class_names"]
    rows, row_labels = [], []
    for i in range(len(images)):
        picture = viz.to_uint8_image(images[i])
        predicted = classes[int(out.class_ids[i])]
        row = [viz.draw_label(picture, f"as {predicted}", position="bottom")]
        for m in names:
            cam = maps[m]
            row.append(viz.overlay(picture, cam[i], alpha=0.5) if isinstance(cam, torch.Tensor)
                       else viz.draw_label(np.full_like(picture, 200), "refused"))
        row.append(viz.gradients_to_image(out.guided[i]))
        row.append(viz.gradients_to_image(out.guided_cams["gradcam"]["backbone"][i]))
        rows.append(row)
        row_labels.append(classes[int(labels[i])])
    titles = ["image", *(METHODS[m].title or m for m in names), "guided bp", "guided Grad-CAM"]
    return viz.annotate_sheet(rows, row_labels, titles)


def main(out_dir: Path) -> list[Path]:
    """Write ``shapes_methods.png`` into ``out_dir``; return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, data = train()
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    images, labels = batch["image"][:NUM_IMAGES], batch["label"][:NUM_IMAGES]
    sheet = methods_sheet(model, images, labels)
    path = out_dir / "shapes_methods.png"
    viz.save_image(path, sheet)
    return [path]
