"""CAM maps for the detections of Hugging Face DETR-family detectors, per query, unpatched.

Supported: ``DetrForObjectDetection``, ``ConditionalDetrForObjectDetection``,
``DeformableDetrForObjectDetection``, ``RTDetrForObjectDetection``,
``RTDetrV2ForObjectDetection`` (and their subclasses), built from a config or loaded from a
``save_pretrained`` folder (:func:`load_detr_model`). ``transformers`` is optional: importing
this module does not import it.

* **Which detections.** The family's own post-processing (its image processor's
  ``post_process_object_detection``, records in
  :data:`~lightning_cam.detection.architectures.DETR_FAMILIES`) lists the candidates:
  DETR, one per query, its best object class under a softmax over the ``C + 1`` logits (the last
  is "no object"); Conditional / Deformable DETR the 100 highest sigmoid (query, class) pairs;
  RT-DETR the ``num_queries`` highest pairs (a softmax like DETR's when its config says
  ``use_focal_loss=False``). Of those, the explainer keeps the ``top_k`` highest scoring at
  least ``score_threshold``, as :class:`~lightning_cam.detection.DetectionExplainer` does.
  Each detection is linked to its query (and class) by recomputing that selection on the
  model's own logits; the link is checked against the post-processing's scores, labels and
  boxes, and refused when they disagree (a post-processing that is not the family's).
* **Which score.** Detection ``k`` of query ``q`` and class ``c`` explains its reported score:
  ``softmax(logits[q])[c]`` (DETR, "no object" included in the softmax) or
  ``sigmoid(logits[q, c])`` (the others). ``K`` detections: one forward, one batched backward.
* **Which maps.** CAMs (any registered method that explains arbitrary scores) of backbone or
  encoder layers: the default is the backbone's last stage (RT-DETR: its hybrid encoder's finest
  output level; :func:`default_detr_layer`);
  feature maps ``(B, C, h, w)`` are used as they are, encoder tokens ``(B, h * w, d)`` of the
  single-scale encoders (DETR, Conditional DETR, RT-DETR's AIFI) are folded into the feature
  grid. Deformable DETR's encoder concatenates several levels' tokens: refused (use a backbone
  or ``model.input_proj.<level>`` layer). With ``cross_attention=True`` (DETR and Conditional
  DETR), ``result.attention_maps["cross_attention"]``: the last decoder layer's
  cross-attention weights of the detection's query over the encoder grid, averaged over heads.
  Deformable attention (Deformable DETR, RT-DETR) has no such map: each query samples a few
  points per head and level at learned offsets, and its ``cross_attentions`` output holds the
  weights of those points, not of image positions; it is refused rather than drawn wrong.
* **Alignment.** Images are given as ``(C, H, W)`` floats in ``[0, 1]``; the image processor
  resizes (and may pad) them (its ``1 / 255`` rescale skipped). Maps are stretched over the
  model's canvas, cropped to the resized image (the processor's ``pixel_mask``) and resized to
  the image as given; boxes come from the post-processing with the image's own size.

Example:
    >>> import torch, transformers
    >>> backbone = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64],
    ...     depths=[1, 1, 1, 1], layer_type="basic", out_features=["stage4"])
    >>> config = transformers.DetrConfig(use_timm_backbone=False, backbone_config=backbone,
    ...     use_pretrained_backbone=False, d_model=32, encoder_layers=1, decoder_layers=1,
    ...     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
    ...     decoder_ffn_dim=32, num_queries=8, num_labels=3)
    >>> model = transformers.DetrForObjectDetection(config)
    >>> processor = transformers.DetrImageProcessor(
    ...     size={"shortest_edge": 64, "longest_edge": 96})
    >>> explainer = DetrExplainer(model, processor, score_threshold=0.0, top_k=2)
    >>> explainer(torch.rand(3, 60, 90)).map("eigengradcam").shape
    torch.Size([2, 60, 90])
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_cam.detection.architectures import DETR_FAMILIES, DetrFamily
from lightning_cam.detection.base import (
    DEFAULT_METHODS,
    DetectionExplainerBase,
    check_image,
    check_selection,
    select_detections,
    to_original,
)
from lightning_cam.detection.discovery import find_wrapped
from lightning_cam.detection.result import DetectionResult
from lightning_cam.engine import Explainer
from lightning_cam.engine.layers import get_layer
from lightning_cam.engine.layouts import fold_tokens, grid_fits

__all__ = [
    "CROSS_ATTENTION",
    "DetrExplainer",
    "default_detr_layer",
    "default_image_processor",
    "detr_family",
    "explain_detr_batch",
    "find_detr_model",
    "is_detr_model",
    "load_detr_model",
]

#: The key of the decoder cross-attention maps in :attr:`DetectionResult.attention_maps`.
CROSS_ATTENTION = "cross_attention"

_PREFIX = "detector."
_STRIDES = (4, 8, 16, 32, 64)
_INSTALL = "pip install transformers (or lightning-cam[hf])"


def detr_family(model: Any) -> DetrFamily | None:
    """The :class:`~lightning_cam.detection.architectures.DetrFamily` record of ``model`` (its
    class or a base class by name, from ``transformers``), else ``None``. Never imports
    transformers."""
    if not isinstance(model, nn.Module) or "transformers" not in sys.modules:
        return None
    for cls in type(model).__mro__:
        if cls.__module__.startswith("transformers.") and cls.__name__ in DETR_FAMILIES:
            family = DETR_FAMILIES[cls.__name__]
            config = getattr(model, "config", None)
            if family.scores == "sigmoid" and getattr(config, "use_focal_loss", True) is False:
                return dataclasses.replace(family, scores="softmax", candidates=None)
            return family
    return None


def is_detr_model(model: Any) -> bool:
    """Whether ``model`` is a supported transformers DETR-family detector."""
    return detr_family(model) is not None


def find_detr_model(obj: Any) -> nn.Module | None:
    """The DETR-family model in ``obj``: itself, its ``detector`` / ``model`` attribute, or its
    only direct child that is one (e.g. a LightningModule wrapping one); ``None`` otherwise."""
    return find_wrapped(obj, is_detr_model)


def _refuse_unsupported(model: Any) -> None:
    """A clear refusal for a model that is not an eager DETR-family model."""
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            "The DETR explainer needs the eager transformers model: a TorchScript module "
            "(torch.jit.trace / script) runs a compiled graph whose layers no hook sees and "
            "whose query logits cannot be linked to its detections. Pass the model it was "
            "made from (e.g. transformers.AutoModelForObjectDetection.from_pretrained(folder))."
        )
    if not is_detr_model(model):
        known = ", ".join(DETR_FAMILIES)
        raise TypeError(
            f"{type(model).__name__} is not a supported transformers DETR-family detector "
            f"({known}). Exported graphs (torch.export, ONNX, TorchScript) are refused: pass "
            "the eager transformers model they came from."
        )


def default_detr_layer(model: nn.Module) -> str:
    """The default layer: for RT-DETR the hybrid encoder's finest output level
    (``model.encoder.fpn_blocks.<last>``, stride 8: the best localising layer measured, the
    backbone's last stage the worst; ``benchmarks/detection_quality.md``); otherwise the
    backbone's last stage: ``model.backbone.model.encoder.stages.<i>`` for transformers
    backbones (the stage of the last ``out_features``), the last feature module of a timm
    backbone.

    Raises:
        ValueError: No backbone found (pass ``layer=...``).
    """
    family = detr_family(model)
    name = family.default_blocks if family is not None else None
    if name is not None and _has(model, name):
        blocks = model.get_submodule(name)
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            return f"{name}.{len(blocks) - 1}"
    conv = getattr(getattr(model, "model", None), "backbone", None)
    body = getattr(conv, "model", None)
    stages = getattr(getattr(body, "encoder", None), "stages", None)
    names = getattr(body, "stage_names", None)
    outs = getattr(body, "out_features", None)
    if isinstance(stages, nn.ModuleList) and names and outs:
        return f"model.backbone.model.encoder.stages.{list(names).index(outs[-1]) - 1}"
    info = getattr(body, "feature_info", None)
    if info is not None and hasattr(info, "module_name"):
        return f"model.backbone.model.{info.module_name()[-1]}"
    raise ValueError(
        f"{type(model).__name__} has no transformers or timm backbone at model.backbone.model "
        "to take the default layer from; pass layer=... (a dotted name from "
        "model.named_modules(), e.g. model.input_projection)."
    )


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _token_grid(n: int, canvas: tuple[int, int], layer: str) -> tuple[int, int]:
    """The ``(h, w)`` grid of ``n`` encoder tokens over the model's canvas (one stride)."""
    grids = [(h, n // h) for h in range(1, n + 1) if n % h == 0]
    grids = [g for g in grids if grid_fits(g[0], g[1], canvas, _STRIDES)]
    if len(grids) != 1:
        raise ValueError(
            f"Layer {layer!r} outputs {n} tokens, which fold into "
            f"{'no' if not grids else 'several'} feature grid(s) {grids} of the {canvas} input; "
            "explain a feature map instead (a backbone stage, or the encoder's input projection)."
        )
    return grids[0]


class _QueryDetector(nn.Module):
    """The DETR model as the engine sees it: ``pixel_values (1, C, H, W) -> its output``, with
    the processor's pixel mask and the attention flag of the current call."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        self.pixel_mask: torch.Tensor | None = None
        self.attentions = False

    def forward(self, pixel_values: torch.Tensor) -> Any:
        kwargs: dict[str, Any] = {"pixel_values": pixel_values}
        if self.pixel_mask is not None:
            kwargs["pixel_mask"] = self.pixel_mask
        if self.attentions:
            kwargs["output_attentions"] = True
        return self.detector(**kwargs)


def query_candidates(
    logits: torch.Tensor, family: DetrFamily
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The family's candidates from one image's query logits ``(Q, C')``: ``(scores, labels,
    queries)``, each ``(N,)``, in the post-processing's order."""
    q, c = logits.shape
    if family.scores == "softmax":
        scores, labels = logits.softmax(-1)[:, :-1].max(-1)
        return scores, labels, torch.arange(q, device=logits.device)
    prob = logits.sigmoid().flatten()
    k = min(family.candidates or q, prob.numel())
    scores, index = prob.topk(k)
    return scores, index % c, torch.div(index, c, rounding_mode="floor")


def query_scores(
    logits: torch.Tensor, family: DetrFamily, queries: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The differentiable score of each (query, class): ``(K,)`` from logits ``(Q, C')``."""
    if family.scores == "softmax":
        return logits[queries].softmax(-1)[torch.arange(len(queries)), labels]
    return logits[queries, labels].sigmoid()


class DetrExplainer(DetectionExplainerBase):
    """CAM maps for the detections of a transformers DETR-family detector, one per query.

    The same call as :class:`~lightning_cam.detection.DetectionExplainer`: an image in, a
    :class:`~lightning_cam.detection.DetectionResult` out. The model is borrowed (eval mode
    during a call, flags restored, no hook left, ``param.grad`` untouched).

    Args:
        model: A DETR-family model (see :data:`~lightning_cam.detection.architectures.
            DETR_FAMILIES`).
        image_processor: Its transformers image processor (resize, normalisation, padding, and
            the post-processing that defines the detections); ``None``: the family's default
            processor (``AutoImageProcessor`` of the model's type, default settings).
        layer: Dotted name(s) of the model's layers, or ``None`` for the backbone's last stage.
        methods: CAM methods (names or aliases of :data:`lightning_cam.methods.METHODS`).
        score_threshold: Explain detections with a score at least this.
        top_k: Explain at most this many detections (the highest scores).
        cross_attention: Also the decoder's cross-attention map of each detection's query
            (DETR, Conditional DETR; needs ``attn_implementation="eager"``).
        class_names: Names indexed by label; default: the config's ``id2label``.

    Raises:
        TypeError: Not an eager DETR-family model (TorchScript and exported graphs included).
        ValueError: Unknown layer or method, a multi-scale encoder token layer,
            ``cross_attention`` where the model has no dense cross-attention or does not run
            eager attention, bad ``score_threshold`` / ``top_k``.
    """

    def __init__(
        self,
        model: nn.Module,
        image_processor: Any = None,
        layer: str | Sequence[str] | None = None,
        methods: str | Sequence[str] = DEFAULT_METHODS,
        score_threshold: float = 0.5,
        top_k: int = 10,
        cross_attention: bool = False,
        class_names: Sequence[str] | None = None,
    ) -> None:
        _refuse_unsupported(model)
        family = detr_family(model)
        assert family is not None
        self.family = family
        self.methods = check_selection(methods, score_threshold, top_k)
        self.model: Any = model
        self.score_threshold = float(score_threshold)
        self.top_k = top_k
        self.processor = (image_processor if image_processor is not None
                          else default_image_processor(model))
        if not callable(getattr(self.processor, "post_process_object_detection", None)):
            raise TypeError(
                f"image_processor {type(self.processor).__name__} has no "
                "post_process_object_detection: pass the model's transformers image processor"
            )
        self.class_names = list(class_names) if class_names is not None else _id2label(model)
        self.layers = self._check_layers(layer)
        self.cross_attention = self._check_cross_attention(bool(cross_attention))
        self.roi_cams, self.roi_layer = False, ""
        self._canvas: tuple[int, int] = (0, 0)
        #: The query of each detection of the last call ``(K,)``, and the scores explained
        #: (differentiated) for them, equal to the reported ``result.scores``.
        self.last_queries = torch.zeros(0, dtype=torch.long)
        self.last_scores = torch.zeros(0)
        self._module = _QueryDetector(model)
        self._explainer = Explainer(
            self._module, [_PREFIX + n for n in self.layers], methods=self.methods,
            reshape_transform=self._layout,
        )

    def _check_layers(self, layer: str | Sequence[str] | None) -> list[str]:
        names = [layer] if isinstance(layer, str) else list(layer) if layer is not None else []
        for n in names:
            if not isinstance(n, str):
                raise TypeError(f"layer names must be strings, got {type(n).__name__}")
            get_layer(self.model, n)  # unknown names: ValueError with near matches
            if self.family.multi_scale_encoder and (n == "model.encoder"
                                                    or n.startswith("model.encoder.")):
                raise ValueError(
                    f"Layer {n!r}: {type(self.model).__name__}'s encoder concatenates the tokens "
                    "of several feature levels, which fold into no single grid; explain a "
                    "backbone stage or a level's projection (model.input_proj.<level>)."
                )
            if n.startswith("model.decoder") or n.startswith(("class_", "bbox_")):
                raise ValueError(
                    f"Layer {n!r} works on queries, not image positions; explain a backbone or "
                    "encoder layer (or cross_attention=True for the decoder's attention)."
                )
        return list(dict.fromkeys(names or [default_detr_layer(self.model)]))

    def _check_cross_attention(self, wanted: bool) -> bool:
        if not wanted:
            return False
        name = type(self.model).__name__
        if not self.family.dense_cross_attention:
            raise ValueError(
                f"cross_attention=True: {name}'s decoder uses deformable attention, which "
                "samples a few points per head and feature level at learned offsets around a "
                "reference point; its attention weights belong to those points, not to image "
                "positions, so there is no dense cross-attention map to draw. Use the CAM maps "
                "(layer=...) for this model."
            )
        impl = getattr(getattr(self.model, "config", None), "_attn_implementation", "eager")
        if impl not in (None, "eager"):
            raise ValueError(
                f"cross_attention=True needs the attention weights, which {name} returns only "
                f"with eager attention (it runs {impl!r}): load it with "
                "from_pretrained(..., attn_implementation='eager') or call "
                "model.set_attn_implementation('eager') first."
            )
        return True

    def _layout(self, t: torch.Tensor) -> torch.Tensor:
        """Feature maps as they are; single-scale encoder tokens folded into their grid."""
        if t.dim() != 3:
            return t
        grid = _token_grid(int(t.shape[1]), self._canvas, "encoder tokens")
        return fold_tokens(0, grid)(t)

    def _device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _inputs(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``pixel_values (1, C, h, w)`` and ``pixel_mask (1, h, w)`` (or ``None``) of an image
        in ``[0, 1]``: the processor's resize, normalisation and padding, no rescale."""
        out = self.processor(images=image.detach().float().cpu(), return_tensors="pt",
                             do_rescale=False)
        device = self._device()
        mask = out.get("pixel_mask")
        return out["pixel_values"].to(device), None if mask is None else mask.to(device)

    def __call__(self, image: torch.Tensor) -> DetectionResult:
        """Detect and explain one image.

        Args:
            image: ``(C, H, W)`` float image in ``[0, 1]`` (not normalised: the image processor
                normalises it), on any device.

        Returns:
            A :class:`DetectionResult` with the ``K <= top_k`` detections scoring at least
            ``score_threshold``, their boxes in the image's pixels and their maps
            ``(K, H, W)``; ``K`` may be 0.
        """
        image = check_image(image)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        x, mask = self._inputs(image)
        padded = (int(x.shape[-2]), int(x.shape[-1]))
        resized = padded if mask is None else (int(mask[0].any(-1).sum()),
                                               int(mask[0].any(-2).sum()))
        self._canvas = padded
        chosen: dict[str, Any] = {}

        def score_fn(output: Any) -> torch.Tensor:
            logits = output.logits[0]
            chosen.update(self._select(output, size))
            keep = chosen["keep"]
            return query_scores(logits, self.family, chosen["queries"][keep],
                                chosen["labels"][keep])

        self._module.pixel_mask, self._module.attentions = mask, self.cross_attention
        try:
            explanation, output = self._explainer.explain_scores(x, score_fn, upsample=False)
        finally:
            self._module.pixel_mask, self._module.attentions = None, False
        keep = chosen["keep"]
        result = self._new_result(chosen["boxes"][keep], chosen["labels"][keep],
                                  chosen["scores"][keep], explanation, size, resized, padded)
        if self.cross_attention:
            result.attention_maps[CROSS_ATTENTION] = self._attention(
                output, chosen["queries"][keep], size, resized, padded)
        self.last_queries = chosen["queries"][keep].cpu()
        explained = explanation.scores
        self.last_scores = (torch.zeros(0) if explained is None
                            else explained.detach().float().cpu())
        return result

    def _select(self, output: Any, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The family's candidates, linked to their queries and checked against its
        post-processing; ``keep``: those explained."""
        logits = output.logits.detach()
        scores, labels, queries = query_candidates(logits[0], self.family)
        post = self._post_process(output, size)
        box = _corners(output.pred_boxes.detach()[0, queries]) * torch.tensor(
            [size[1], size[0], size[1], size[0]], dtype=torch.float32, device=logits.device)
        if not (
            post["scores"].shape == scores.shape
            and torch.equal(post["labels"].to(labels.device), labels)
            and torch.allclose(post["scores"].to(scores.device).float(), scores.float())
            and torch.allclose(post["boxes"].to(box.device).float(), box.float(), atol=1e-3)
        ):
            raise ValueError(
                f"The detections of {type(self.processor).__name__}.post_process_object_detection"
                f" do not match {type(self.model).__name__}'s query logits as its family selects "
                "them (a custom post-processing?): the detection <-> query link is ambiguous, so "
                "nothing is explained. Pass the model's own transformers image processor."
            )
        keep = select_detections(scores, self.score_threshold, self.top_k)
        return {"scores": post["scores"].float(), "labels": labels, "queries": queries,
                "boxes": post["boxes"].float(), "keep": keep}

    def _post_process(self, output: Any, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The family's own post-processing of the (detached) output, every candidate kept."""
        from transformers.utils import ModelOutput

        detached = ModelOutput(logits=output.logits.detach(),
                               pred_boxes=output.pred_boxes.detach())
        kwargs: dict[str, Any] = {}
        if self.family.model_class.startswith("RTDetr"):
            kwargs["use_focal_loss"] = self.family.scores == "sigmoid"
        with torch.no_grad():
            return dict(self.processor.post_process_object_detection(
                detached, threshold=-1.0, target_sizes=[size], **kwargs)[0])

    def _attention(
        self, output: Any, queries: torch.Tensor, size: tuple[int, int],
        resized: tuple[int, int], padded: tuple[int, int],
    ) -> torch.Tensor:
        """The last decoder layer's cross-attention of each query, head-averaged, on the image."""
        attn = output.cross_attentions[-1].detach()[0].float().mean(0)  # (Q, N)
        grid = _token_grid(int(attn.shape[-1]), padded, "the decoder's cross-attention keys")
        maps = attn[queries].reshape(len(queries), *grid)
        return to_original(maps, resized, padded, size).cpu()

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], **kwargs: Any) -> DetrExplainer:
        """An explainer of the model saved in ``folder`` (:func:`load_detr_model`)."""
        model, processor = load_detr_model(folder)
        return cls(model, processor, **kwargs)


def _corners(boxes: torch.Tensor) -> torch.Tensor:
    """``(cx, cy, w, h) -> (x1, y1, x2, y2)``."""
    cx, cy, w, h = boxes.float().unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def _id2label(model: Any) -> list[str] | None:
    labels = getattr(getattr(model, "config", None), "id2label", None)
    if not isinstance(labels, dict) or not labels:
        return None
    return [str(labels.get(i, labels.get(str(i), f"class {i}"))) for i in range(len(labels))]


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f"DETR-family models need transformers ({err}); {_INSTALL}") from err
    return transformers


def default_image_processor(model: Any) -> Any:
    """The family's default image processor (default settings), for a model built in code."""
    transformers = _require_transformers()
    family = detr_family(model)
    assert family is not None
    name = family.model_class.replace("ForObjectDetection", "ImageProcessor")
    cls = getattr(transformers, name, None) or getattr(transformers, name.replace("V2", ""))
    return cls()


def load_detr_model(
    folder: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, Any]:
    """A DETR-family model and its image processor from a ``save_pretrained`` folder (eager
    attention, so its cross-attention can be read; the same numbers as the default).

    Raises:
        ImportError: transformers is not installed.
        ValueError: Not a folder with a ``config.json`` of a supported model.
    """
    transformers = _require_transformers()
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} is not a save_pretrained folder (no config.json)")
    model = transformers.AutoModelForObjectDetection.from_pretrained(
        str(path), attn_implementation="eager").to(device).eval()
    _refuse_unsupported(model)
    if (path / "preprocessor_config.json").is_file():
        processor = transformers.AutoImageProcessor.from_pretrained(str(path))
    else:
        processor = default_image_processor(model)
    return model, processor


def explain_detr_batch(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    layers: str | Sequence[str] | None = None,
    methods: str | Sequence[str] = DEFAULT_METHODS,
    top_k: int = 5,
    score_threshold: float = 0.5,
    image_processor: Any = None,
    class_names: Sequence[str] | None = None,
) -> list[DetectionResult]:
    """Explain the detections of a list of images: for callbacks and scripts.

    Args:
        model: A DETR-family model, or a module wrapping one (see :func:`find_detr_model`);
            its ``image_processor`` attribute is used when ``image_processor`` is ``None``.
        images: ``(C, H, W)`` float images in ``[0, 1]``.
        layers, methods, top_k, score_threshold, class_names: As for :class:`DetrExplainer`.
        image_processor: The model's image processor.

    Raises:
        TypeError: ``model`` holds no DETR-family model.
    """
    detector = find_detr_model(model)
    if detector is None:
        raise TypeError(f"{type(model).__name__} is not and does not wrap a DETR-family model")
    processor = image_processor or getattr(model, "image_processor", None)
    explainer = DetrExplainer(
        detector, processor, layer=layers, methods=methods, score_threshold=score_threshold,
        top_k=top_k, class_names=class_names,
    )
    return explainer.explain(images)
