"""Three detectors trained on the same shapes, each detection explained: the README's picture.

A Faster R-CNN (torchvision, :class:`~lightning_cam.detection.module.ShapesDetector`), a YOLO
(ultralytics, :class:`~lightning_cam.detection.yolo_module.ShapesYOLO`) and a small RT-DETR
(Hugging Face transformers, built from a config) are trained from scratch, with random
initialisation and no download, on the same synthetic shapes (96 px, no clutter); then the same
validation images are explained per detection with a method among each family's best of
``benchmarks/detection_quality.md`` (element-wise Grad-CAM at the Faster R-CNN's
``backbone.body.layer3``, Seg-Eigen-CAM at the YOLO's neck and at the RT-DETR's stride-8
encoder output): a column per detector, a row per detection (its box, then its map, the method
and layer above it), for the explainer each family has (``DetectionExplainer``,
``YOLOExplainer``, ``DetrExplainer``).

Run (from the repository root; about 45 minutes on a 2-core CPU, most of it the RT-DETR's
3000 steps; ``--cache`` keeps the trained models)::

    python examples/detectors_side_by_side.py --out docs/detectors_side_by_side.jpg --cache /tmp/d

``--steps`` sets the three trainings (the test suite runs it with a few steps; a DETR step
count of 0 leaves it out). The DETR family is slow to learn: a plain DETR and a Conditional
DETR of this size did not learn their classes in 3000 steps (their boxes did); RT-DETR, whose
queries start from the encoder's best proposals and which trains with denoising queries, does.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")

from lightning_cam.data.detection import ShapesDetectionDataModule  # noqa: E402
from lightning_cam.detection import DetectionExplainer, DetrExplainer, YOLOExplainer  # noqa: E402
from lightning_cam.detection.render import render_detection  # noqa: E402
from lightning_cam.tools import viz  # noqa: E402

SIZE = 96
#: The RT-DETR's map: the best energy of ``benchmarks/detection_quality.md``'s RT-DETR table (its
#: default layer).
DETR_METHOD, DETR_LAYER = "segeigencam", "model.encoder.fpn_blocks.1"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def data_module(num_val: int = 40, masks: bool = False) -> ShapesDetectionDataModule:
    """The shapes all three are trained on (``benchmarks/detection_quality_yolo.py``'s)."""
    return ShapesDetectionDataModule(num_train=400, num_val=num_val, num_test=40,
                                     image_size=SIZE, batch_size=8, clutter=False, masks=masks)


def _fit(module: Any, steps: int) -> Any:
    import pytorch_lightning as pl

    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=data_module())
    return module


def train_faster_rcnn(steps: int) -> Any:
    """``fasterrcnn_simple`` with the recipe of ``configs/shapes_detection.yaml``."""
    from lightning_cam.detection.module import ShapesDetector

    dm = data_module()
    return _fit(ShapesDetector(num_classes=dm.num_classes, class_names=dm.class_names,
                               min_size=SIZE, max_size=SIZE, lr=0.02,
                               warmup_steps=min(50, steps)), steps)


def train_yolo(steps: int) -> Any:
    """``ShapesYOLO(width=0.125)`` with the recipe of ``benchmarks/detection_quality_yolo.py``."""
    from lightning_cam.detection.yolo_module import ShapesYOLO

    dm = data_module()
    return _fit(ShapesYOLO(width=0.125, num_classes=dm.num_classes,
                           class_names=dm.class_names, lr=3e-3,
                           warmup_steps=min(30, steps)), steps)


def build_detr(num_labels: int, names: list[str]) -> tuple[Any, Any]:
    """A small RT-DETR from a config: a 4-stage basic-block ResNet (widths 16-128, the last
    three stages into the hybrid encoder), d_model 64, 2 decoder layers, 30 queries, 20
    denoising queries; its image processor at the data's size with ImageNet normalisation."""
    import transformers as T

    backbone = T.RTDetrResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128],
                                    depths=[1, 1, 1, 1], layer_type="basic",
                                    out_features=["stage2", "stage3", "stage4"])
    config = T.RTDetrConfig(
        backbone_config=backbone, encoder_hidden_dim=64, d_model=64,
        encoder_in_channels=[32, 64, 128], decoder_in_channels=[64, 64, 64],
        encoder_ffn_dim=128, decoder_ffn_dim=128, decoder_layers=2, num_queries=30,
        encoder_attention_heads=4, decoder_attention_heads=4, decoder_n_points=2,
        num_denoising=20, num_labels=num_labels,
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    processor = T.RTDetrImageProcessor(size={"height": SIZE, "width": SIZE}, do_normalize=True,
                                       image_mean=list(MEAN), image_std=list(STD))
    return T.RTDetrForObjectDetection(config), processor


def _detr_labels(target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A shapes target as DETR's loss reads it: labels from 0, boxes ``(cx, cy, w, h) / size``."""
    b = target["boxes"].float() / SIZE
    cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
                          b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    return {"class_labels": target["labels"] - 1, "boxes": cxcywh}


def train_detr(steps: int) -> tuple[Any, Any]:
    """The RT-DETR trained with its own loss (matching, varifocal and box losses, the
    denoising queries), AdamW 2e-4, batch 8, gradient norm clipped at 0.1, from scratch.

    The data module's images are floats in ``[0, 1]``: normalised as the processor does (an
    earlier version divided them by 255 again and trained on nearly black images)."""
    torch.manual_seed(0)  # the same model whether or not the other two were trained first
    dm = data_module()
    model, processor = build_detr(dm.num_classes - 1, dm.class_names[1:])
    train = dm.dataset("train")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=1e-4)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        items = [train[int(i)] for i in torch.randint(len(train), (8,), generator=g)]
        x = torch.stack([(im - mean) / std for im, _ in items])
        loss = model(pixel_values=x, labels=[_detr_labels(t) for _, t in items]).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
    return model.eval(), processor


def _block(title: str, sheets: list[np.ndarray]) -> np.ndarray:
    """Sheets of one detector under its title, padded to a common width."""
    width = max(s.shape[1] for s in sheets)
    rows = [np.pad(s, ((0, 4), (0, width - s.shape[1]), (0, 0)), constant_values=255)
            for s in sheets]
    head = np.full((28, width, 3), 255, np.uint8)
    return np.concatenate([viz.draw_label(head, title), *rows])


def explainers(steps: dict[str, int], cache: Path | None) -> list[tuple[str, Any]]:
    """``(title, explainer)`` per detector, trained (or loaded from ``cache``)."""
    torch.manual_seed(0)
    frcnn = _cached(cache, f"faster_rcnn-{steps['frcnn']}",
                    lambda: train_faster_rcnn(steps["frcnn"]))
    yolo = _cached(cache, f"yolo-{steps['yolo']}", lambda: train_yolo(steps["yolo"]))
    common: dict[str, Any] = {"score_threshold": 0.5, "top_k": 3}
    out: list[tuple[str, Any]] = [
        ("Faster R-CNN (torchvision)",
         DetectionExplainer(frcnn.detector.eval(), layer="backbone.body.layer3",
                            methods="gradcam-elementwise", class_names=frcnn.class_names,
                            **common)),
        ("YOLOv8 (ultralytics)",
         YOLOExplainer(yolo.model.eval(), methods="segeigencam", imgsz=SIZE,
                       class_names=yolo.class_names, **common)),
    ]
    if steps["detr"] > 0:
        detr, processor = _cached(cache, f"detr-{steps['detr']}",
                                  lambda: train_detr(steps["detr"]))
        out.append(("RT-DETR (transformers)",
                    DetrExplainer(detr.eval(), processor, layer=DETR_LAYER, methods=DETR_METHOD,
                                  **common)))
    return out


def _cached(cache: Path | None, name: str, make: Any) -> Any:
    path = None if cache is None else cache / f"{name}.pt"
    if path is not None and path.is_file():
        return torch.load(path, weights_only=False)
    start = time.perf_counter()
    obj = make()
    print(f"{name}: trained in {time.perf_counter() - start:.0f} s", flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, path)
    return obj


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/detectors_side_by_side.jpg")
    p.add_argument("--steps", type=int, nargs=3, default=[500, 1500, 3000],
                   metavar=("FRCNN", "YOLO", "DETR"),
                   help="training steps of each (DETR 0: left out)")
    p.add_argument("--images", type=int, nargs="+", default=[0, 1])
    p.add_argument("--cache", default=None, help="keep / reuse the trained models here")
    args = p.parse_args(argv)
    torch.set_flush_denormal(True)
    steps = dict(zip(("frcnn", "yolo", "detr"), args.steps, strict=True))
    pairs = explainers(steps, Path(args.cache) if args.cache else None)
    dm = data_module()
    val, names = dm.dataset("val"), dm.class_names
    blocks = []
    for title, explainer in pairs:
        sheets = []
        for i in args.images:
            image, target = val[i]
            sheet = render_detection(viz.to_uint8_image(image), explainer(image), tile_size=160)
            truth = ", ".join(names[int(k)] for k in target["labels"])
            strip = np.full((22, sheet.shape[1], 3), 255, np.uint8)
            sheets.append(np.concatenate([viz.draw_label(strip, f"image {i}, true: {truth}"),
                                          sheet]))
        blocks.append(_block(title, sheets))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    height = max(b.shape[0] for b in blocks)
    viz.save_image(out, np.concatenate(
        [np.pad(b, ((0, height - b.shape[0]), (0, 16), (0, 0)), constant_values=255)
         for b in blocks], axis=1))
    print(f"picture: {out}")
    return out


if __name__ == "__main__":
    main()
