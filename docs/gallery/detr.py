"""Gallery: per-detection Grad-CAM and decoder cross-attention of a DETR (transformers).

The model is a small DETR built from a config with random weights (no download, seconds on a
CPU), so the maps show what the explainer produces and how it is laid out, not what a trained
DETR looks at: one row per detection (its query), the detection's box, its Grad-CAM on the
backbone's last stage, its Grad-CAM on the encoder's tokens (folded into the feature grid) and
the last decoder layer's cross-attention of its query, all on the original, non-square image.
"""

from __future__ import annotations

import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Write ``detr_detections.png`` into ``out_dir``; return its path."""
    import transformers

    from lightning_cam.data.detection import ShapesDetectionDataset
    from lightning_cam.detection import DetrExplainer
    from lightning_cam.detection.detr import CROSS_ATTENTION
    from lightning_cam.detection.render import detection_heatmap, draw_detections
    from lightning_cam.tools import viz
    from lightning_cam.tools.image_io import save_image

    torch.manual_seed(0)
    backbone = transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
        layer_type="basic", out_features=["stage4"])
    config = transformers.DetrConfig(
        use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False,
        d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_queries=20,
        num_labels=3, id2label={0: "circle", 1: "square", 2: "triangle"},
        attn_implementation="eager")  # cross-attention weights need eager attention
    model = transformers.DetrForObjectDetection(config).eval()
    processor = transformers.DetrImageProcessor(size={"shortest_edge": 192, "longest_edge": 288})
    image = ShapesDetectionDataset(num_samples=1, image_size=128, seed=3)[0][0]
    image = torch.nn.functional.interpolate(image[None], size=(128, 192), mode="bilinear",
                                            align_corners=False)[0].clamp(0, 1)
    layers = ["model.backbone.model.encoder.stages.3", "model.encoder.layers.1"]
    explainer = DetrExplainer(model, processor, layer=layers, methods="gradcam",
                              score_threshold=0.0, top_k=3, cross_attention=True)
    result = explainer(image)
    picture = viz.to_uint8_image(image)
    rows, labels = [], []
    for k, name in enumerate(result.label_names()):
        rows.append([
            draw_detections(picture, result, [k]),
            *(detection_heatmap(picture, result, k, "gradcam", layer) for layer in layers),
            detection_heatmap(picture, result, k, CROSS_ATTENTION),
        ])
        labels.append(f"query {int(explainer.last_queries[k])}: {name}")
    sheet = viz.annotate_sheet(
        rows, row_labels=labels,
        col_labels=["detection (random weights)", "gradcam backbone stage 4",
                    "gradcam encoder layer 1", "decoder cross-attention"])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "detr_detections.png"
    save_image(path, sheet)
    return [path]


if __name__ == "__main__":
    print(main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "docs/gallery/out")))
