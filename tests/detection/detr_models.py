"""Tiny random-init transformers DETR-family detectors and their image processors, for tests,
benchmarks and the gallery (built from configs, offline)."""

from __future__ import annotations

from typing import Any

import torch

FAMILIES = ("detr", "conditional_detr", "deformable_detr", "rt_detr", "rt_detr_v2")


def _resnet(transformers: Any, cls: str, outs: list[str], width: int) -> Any:
    w = width
    return getattr(transformers, cls)(
        embedding_size=w, hidden_sizes=[w, 2 * w, 4 * w, 8 * w], depths=[1, 1, 1, 1],
        layer_type="basic", out_features=outs,
    )


def tiny_detr(
    name: str = "detr", num_labels: int = 3, seed: int = 0, d_model: int = 32,
    width: int = 8, layers: int = 1, queries: int = 10, attn: str | None = "eager",
) -> tuple[Any, Any]:
    """``(model, image_processor)`` of family ``name`` (see :data:`FAMILIES`): ResNet backbone,
    ``layers`` encoder / decoder layers, images resized to about 64 x 96 px."""
    import transformers as T

    torch.manual_seed(seed)
    extra = {"attn_implementation": attn} if attn is not None else {}
    heads: dict[str, Any] = dict(encoder_attention_heads=2, decoder_attention_heads=2,
                                 encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model)
    common = dict(use_timm_backbone=False, use_pretrained_backbone=False, d_model=d_model,
                  encoder_layers=layers, decoder_layers=max(layers, 2), num_queries=queries,
                  num_labels=num_labels, **heads, **extra)
    aspect = {"shortest_edge": 64, "longest_edge": 96}
    if name in ("detr", "conditional_detr"):
        cls = "DetrForObjectDetection" if name == "detr" else "ConditionalDetrForObjectDetection"
        conf = "DetrConfig" if name == "detr" else "ConditionalDetrConfig"
        proc = "DetrImageProcessor" if name == "detr" else "ConditionalDetrImageProcessor"
        config = getattr(T, conf)(backbone_config=_resnet(T, "ResNetConfig", ["stage4"], width),
                                  **common)
        processor = getattr(T, proc)(size=aspect)
    elif name == "deformable_detr":
        cls = "DeformableDetrForObjectDetection"
        config = T.DeformableDetrConfig(
            backbone_config=_resnet(T, "ResNetConfig", ["stage2", "stage3", "stage4"], width),
            num_feature_levels=3, encoder_n_points=2, decoder_n_points=2, **common)
        processor = T.DeformableDetrImageProcessor(size=aspect)
    elif name in ("rt_detr", "rt_detr_v2"):
        v2 = name == "rt_detr_v2"
        cls = "RTDetrV2ForObjectDetection" if v2 else "RTDetrForObjectDetection"
        hidden = d_model // 2
        config = getattr(T, "RTDetrV2Config" if v2 else "RTDetrConfig")(
            backbone_config=_resnet(T, "RTDetrResNetConfig", ["stage2", "stage3", "stage4"],
                                    width),
            encoder_hidden_dim=hidden, d_model=d_model,
            encoder_in_channels=[2 * width, 4 * width, 8 * width],
            decoder_in_channels=[hidden] * 3, encoder_ffn_dim=2 * d_model,
            decoder_ffn_dim=2 * d_model, decoder_layers=max(layers, 2), num_queries=queries,
            num_labels=num_labels, encoder_attention_heads=2, decoder_attention_heads=2,
            decoder_n_points=2, **extra)
        processor = T.RTDetrImageProcessor(size={"height": 64, "width": 96})
    else:
        raise ValueError(f"unknown family {name!r}; one of {FAMILIES}")
    model = getattr(T, cls)(config).eval()
    return model, processor
