"""Gallery: per-detection maps of an ultralytics YOLO (the docs page detection-yolo.md).

One shapes image, a random-init yolov8n (class biases spread so that detections survive NMS:
no training fits the gallery's minute, so the maps show the layout, not a trained model's
evidence): a row per detection, its box, then its map at the neck (the head's inputs) for
Seg-Eigen-CAM (the YOLO default) and Grad-CAM, and at ``model.18`` (the P4 neck output,
whole-network gradient).
"""

from __future__ import annotations

import os
import pathlib

import torch


def main(out_dir: pathlib.Path) -> list[pathlib.Path]:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from lightning_cam.data.detection import ShapesDetectionDataset
    from lightning_cam.detection import YOLO_NECK, YOLOExplainer, load_yolo
    from lightning_cam.detection.render import render_detection
    from lightning_cam.tools import viz

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = load_yolo("yolov8n.yaml", num_classes=5)
    with torch.no_grad():
        for seq in model.model[-1].cv3:
            seq[-1].bias.normal_(-2.0, 1.5)
    image, _ = ShapesDetectionDataset(1, image_size=128, seed=2)[0]
    image = image[:, :, :112]  # not square: the letterbox is undone
    explainer = YOLOExplainer(model, layer=[YOLO_NECK, "model.18"],
                              methods=("segeigencam", "gradcam"), score_threshold=0.0,
                              top_k=3, imgsz=128)
    result = explainer(image)
    picture = render_detection(viz.to_uint8_image(image), result, tile_size=160)
    path = out_dir / "yolo_detections.png"
    viz.save_image(path, picture)
    return [path]


if __name__ == "__main__":  # pragma: no cover
    print(main(pathlib.Path("docs/gallery/out")))
