"""Model families: one record per family, everything the engine knows about it in one place.

A :class:`ModelFamily` says how a family is recognised (class module and name, attributes: timm
and transformers are never imported), its token / map layout (patch size, prefix tokens,
partitioned blocks; read by :mod:`lightning_cam.engine.layouts`), its default layer (read by
:mod:`lightning_cam.engine.layers`) and whether guided backprop shows anything of it (read by
:mod:`lightning_cam.engine.guided`). :data:`FAMILIES` lists the records, first match wins;
adding a family is adding one record there.

:func:`recognise` finds the outermost module of a model that belongs to a family and returns a
:class:`Family`: the record's values read off that module.

Example:
    >>> import torchvision
    >>> fam = recognise(torchvision.models.swin_t(weights=None))
    >>> fam.name, fam.kind, fam.patch_size, fam.default_layer()
    ('torchvision Swin', 'swin', (4, 4), 'features.7')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

#: ``"vit"`` (prefix tokens then a patch grid), ``"swin"`` (hierarchical: tokens or
#: channels-last maps at strides ``patch * 2**k``), ``"convnet"`` (``(B, C, h, w)`` stages).
FamilyKind = Literal["vit", "swin", "convnet"]

_ATTENTION = (
    "gradients flow through attention and residual paths that no gate guides, so guided "
    "backprop is mostly the plain gradient"
)


@dataclass(frozen=True)
class AttentionParts:
    """Where a ViT's attention maps are, for the attention methods (LeGrad).

    Attributes:
        blocks: The transformer blocks, in order (their outputs: the tokens ``(B, N, D)``).
        attentions: Each block's attention module.
        style: How its attention probabilities are read: ``"mha"`` (``nn.MultiheadAttention``,
            recomputed from its weights, checked against its output), ``"timm"`` (timm's
            ``Attention`` with ``fused_attn`` off: the input of its ``attn_drop``) or ``"hf"``
            (transformers' ViT / DeiT / CLIP attention, recomputed from its query, key, value
            and output projections, checked against its output: eager, SDPA or flash alike).
        head: ``tokens (B, N, D) -> output``: the model's final norm and head applied to any
            block's tokens (the class token, timm's pooling, CLIP's projected embedding), an
            output the call's target reads as it reads the model's.
    """

    blocks: list[nn.Module]
    attentions: list[nn.Module]
    style: Literal["mha", "timm", "hf"]
    head: Callable[[Any], Any]


def _tv_vit_attention(m: nn.Module) -> AttentionParts:
    vit: Any = m
    blocks = list(vit.encoder.layers.children())
    return AttentionParts(blocks, [b.self_attention for b in blocks], "mha",
                          lambda t: vit.heads(vit.encoder.ln(t)[:, 0]))


def _timm_vit_attention(m: nn.Module) -> AttentionParts:
    vit: Any = m
    blocks = list(vit.blocks.children())
    return AttentionParts(blocks, [b.attn for b in blocks], "timm",
                          lambda t: vit.forward_head(vit.norm(t)))


def _hf_blocks(base: Any) -> list[nn.Module]:
    """A transformers encoder's blocks: ``layers`` (ViT / DeiT, transformers >= 5),
    ``encoder.layer`` (ViT / DeiT before) or ``encoder.layers`` (CLIP)."""
    for path in ("layers", "encoder.layer", "encoder.layers"):
        found: Any = base
        for name in path.split("."):
            found = getattr(found, name, None)
        if isinstance(found, nn.ModuleList):
            return list(found)
    raise ValueError(
        f"found no transformer blocks (layers, encoder.layer) in {type(base).__name__}"
    )


def _hf_vit_attention(m: nn.Module) -> AttentionParts:
    """transformers' ViT / DeiT classifiers: ``layernorm``, then ``classifier`` on the class
    token (DeiT with teacher: the mean of ``cls_classifier`` on it and
    ``distillation_classifier`` on the distillation token, as its forward)."""
    vit: Any = m
    base = getattr(vit, getattr(vit, "base_model_prefix", ""), None)  # .vit / .deit
    if base is None or not any(hasattr(vit, a) for a in ("classifier", "cls_classifier")):
        raise ValueError(
            f"method 'legrad' scores every block with the model's classification head, and a "
            f"transformers {type(m).__name__} has none: use ViTForImageClassification, "
            "DeiTForImageClassification or DeiTForImageClassificationWithTeacher."
        )
    blocks: list[Any] = _hf_blocks(base)

    def head(t: Any) -> Any:
        seq = base.layernorm(t)
        if hasattr(vit, "cls_classifier"):
            return (vit.cls_classifier(seq[:, 0]) + vit.distillation_classifier(seq[:, 1])) / 2
        return vit.classifier(seq[:, 0])

    attns = [b.attention for b in blocks]
    return AttentionParts(blocks, attns, "hf", head)


def _hf_clip_attention(m: nn.Module) -> AttentionParts:
    """transformers' CLIP vision tower (``CLIPModel``, ``CLIPVisionModel(WithProjection)``):
    ``post_layernorm`` on the class token, then ``visual_projection`` where the model has one
    (the image embedding of ``get_image_features``; else the tower's ``pooler_output``);
    ``CLIPForImageClassification``: ``classifier`` on the mean patch token, as its forward."""
    clip: Any = m
    tower = getattr(clip, "vision_model", clip)
    blocks: list[Any] = _hf_blocks(tower)

    def head(t: Any) -> Any:
        if hasattr(clip, "visual_projection"):
            return clip.visual_projection(tower.post_layernorm(t[:, 0]))
        if hasattr(clip, "classifier"):
            return clip.classifier(t[:, 1:].mean(dim=1))
        return tower.post_layernorm(t[:, 0])

    attns = [b.self_attn for b in blocks]
    return AttentionParts(blocks, attns, "hf", head)


@dataclass(frozen=True)
class ModelFamily:
    """One model family: how it is recognised, its layout, default layer and guided support.

    Attributes:
        name: Display name (``"torchvision ViT"``, ``"timm Swin"``, ``"HF ViT"``...).
        kind: The layout kind (:data:`FamilyKind`).
        matches: ``module -> bool``: whether a module is the family's model.
        patch_size: ``module -> (ph, pw)`` of its patch embedding (``None``: no token layout).
        num_prefix_tokens: Tokens before the patch tokens (class 1, DeiT's distillation +1,
            registers), or ``module -> int``.
        partitioned: Module names whose insides work on window / grid partitions (MaxViT).
        default_layer: ``module -> dotted name`` (relative to the module) of the default layer,
            ``None``: the generic rule of :func:`lightning_cam.engine.layers.default_layer`.
        guided_unsupported: Why guided backprop would be mostly the plain gradient (attention
            models), ``None`` when it shows something.
        attention: ``module -> AttentionParts``: where its attention maps are (LeGrad), ``None``
            where lightning-cam does not read them.
        token_grids: ``module -> grids``: the token grids ``(t, h, w)`` its layers hold, for
            families whose tokens are not a 2-D patch grid (torchvision MViT: its patch
            embedding's grid, then each pooling stage's), ``None``: none.
        maps_channels_first: Every map the family's layers output is ``(B, C, *spatial)`` (plain
            convnets: MONAI networks, torchvision video ResNets and S3D): ``"auto"`` reads them
            as they are, with no channels-last guess.
        whole_model: Matches the model itself only, never a submodule (a ``Conv1d`` block
            inside a 2-D network, e.g. ECA channel attention, is no 1-D CNN).
    """

    name: str
    kind: FamilyKind
    matches: Callable[[nn.Module], bool] = field(repr=False)
    patch_size: Callable[[nn.Module], tuple[int, int]] | None = field(default=None, repr=False)
    num_prefix_tokens: int | Callable[[nn.Module], int] = field(default=0, repr=False)
    partitioned: tuple[str, ...] = ()
    default_layer: Callable[[nn.Module], str | None] | None = field(default=None, repr=False)
    guided_unsupported: str | None = None
    attention: Callable[[nn.Module], AttentionParts] | None = field(default=None, repr=False)
    token_grids: Callable[[nn.Module], tuple[tuple[int, ...], ...]] | None = field(
        default=None, repr=False
    )
    maps_channels_first: bool = False
    whole_model: bool = False

    def recognise(self, module: nn.Module, root: str = "") -> Family | None:
        """The :class:`Family` of ``module`` (found at ``root``) when it matches, else ``None``."""
        if (self.whole_model and root) or not self.matches(module):
            return None
        prefix = self.num_prefix_tokens
        return Family(
            self.name,
            self.kind,
            root,
            module,
            self.patch_size(module) if self.patch_size is not None else None,
            int(prefix(module) if callable(prefix) else prefix),
            self.partitioned,
            record=self,
            token_grids=self.token_grids(module) if self.token_grids is not None else (),
        )


@dataclass(frozen=True)
class Family:
    """What :func:`recognise` knows about a model: a :class:`ModelFamily` read off one module.

    Attributes:
        name: The family's display name.
        kind: ``"vit"``, ``"swin"`` or ``"convnet"`` (:data:`FamilyKind`).
        root: Dotted name of the recognised module inside the model (``""``: the model).
        module: The recognised module.
        patch_size: ``(ph, pw)`` of the patch embedding, when the family has one.
        num_prefix_tokens: Tokens before the patch tokens (class 1, DeiT's distillation +1,
            registers).
        partitioned: Module names whose insides work on partitions (see :meth:`partitions`).
        record: The :class:`ModelFamily` it was recognised by (``None``: built by hand).
        token_grids: The token grids of its layers (``(t, h, w)`` of an MViT), else ``()``.
    """

    name: str
    kind: str
    root: str
    module: nn.Module = field(repr=False, compare=False)
    patch_size: tuple[int, int] | None = None
    num_prefix_tokens: int = 0
    partitioned: tuple[str, ...] = ()
    record: ModelFamily | None = field(default=None, repr=False, compare=False)
    token_grids: tuple[tuple[int, ...], ...] = ()

    @property
    def maps_channels_first(self) -> bool:
        """Whether every map of the family is ``(B, C, *spatial)`` (read as it is)."""
        return self.record is not None and self.record.maps_channels_first

    def partitions(self, layer: str) -> bool:
        """Whether ``layer`` lies inside a module that works on window / grid partitions
        (MaxViT's ``window_attention`` / ``grid_attention``, but not their re-assembled
        output ``departition_op``)."""
        parts = layer.split(".")
        return parts[-1] != "departition_op" and any(p in parts[:-1] for p in self.partitioned)

    def strides(self) -> list[int] | None:
        """The strides at which the family's grids exist (``None``: any integer stride)."""
        if self.patch_size is None or self.patch_size[0] != self.patch_size[1]:
            return None
        p = self.patch_size[0]
        return [p] if self.kind == "vit" else [p * 2**k for k in range(6)]

    def default_layer(self) -> str | None:
        """The family's default layer, a dotted name in the whole model, else ``None``."""
        rule = self.record.default_layer if self.record is not None else None
        name = rule(self.module) if rule is not None else None
        if name is None:
            return None
        return f"{self.root}.{name}" if self.root else name

    @property
    def guided_unsupported(self) -> str | None:
        """Why guided backprop is mostly the plain gradient here, ``None`` when it is not."""
        return self.record.guided_unsupported if self.record is not None else None

    def attention_parts(self) -> AttentionParts | None:
        """Where its attention maps are (:class:`AttentionParts`), ``None`` when not read."""
        rule = self.record.attention if self.record is not None else None
        return rule(self.module) if rule is not None else None


# ----------------------------------------------------------------------------- helpers


def pair(v: Any) -> tuple[int, int]:
    """``16 -> (16, 16)``; ``(16, 8) -> (16, 8)``."""
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[-1])
    return int(v), int(v)


def _of(prefix: str, *names: str) -> Callable[[nn.Module], bool]:
    """Matches classes named ``names`` (any, if none) in modules under ``prefix``."""

    def match(m: nn.Module) -> bool:
        cls = type(m)
        return cls.__module__.startswith(prefix) and (not names or cls.__name__ in names)

    return match


def _timm_vit_like(distilled: bool) -> Callable[[nn.Module], bool]:
    """timm's ViT and relatives: anything with ``patch_embed``, ``num_prefix_tokens`` and
    ``blocks`` (DeiT: a ``Distilled`` class)."""

    def match(m: nn.Module) -> bool:
        return (
            type(m).__module__.startswith("timm.")
            and all(hasattr(m, a) for a in ("patch_embed", "num_prefix_tokens", "blocks"))
            and ("Distilled" in type(m).__name__) == distilled
        )

    return match


def _hf(*model_types: str) -> Callable[[nn.Module], bool]:
    def match(m: nn.Module) -> bool:
        config = getattr(m, "config", None)
        return type(m).__module__.startswith("transformers.") and (
            getattr(config, "model_type", None) in model_types
        )

    return match


def _hf_patch(m: nn.Module) -> tuple[int, int]:
    config: Any = m.config
    return pair(config.patch_size)


def _hf_vision_patch(m: nn.Module) -> tuple[int, int]:
    """A vision tower's patch size: ``config.vision_config`` of a two-tower model (CLIP)."""
    config: Any = m.config
    return pair(getattr(config, "vision_config", config).patch_size)


def _clip_default_layer(m: nn.Module) -> str | None:
    """CLIP's default layer: the vision tower's last block's ``layer_norm1``, whose input (the
    block before's output) still reaches the image embedding through every patch token: the
    last block's own output reaches it through the class token only."""
    found = [n for n, _ in m.named_modules()
             if n.rsplit(".", 1)[-1] == "layer_norm1" and "vision_model" in n.split(".")]
    if not found:
        found = [n for n, _ in m.named_modules() if n.rsplit(".", 1)[-1] == "layer_norm1"]
    return found[-1] if found else None


def _timm_patch(default: int) -> Callable[[nn.Module], tuple[int, int]]:
    def patch(m: nn.Module) -> tuple[int, int]:
        return pair(getattr(m.patch_embed, "patch_size", default))

    return patch


def _timm_prefix(m: nn.Module) -> int:
    prefix: Any = m.num_prefix_tokens
    return int(prefix)


def _tv_swin_patch(m: nn.Module) -> tuple[int, int]:
    conv: Any = m.features[0][0]  # type: ignore[index]
    return pair(conv.stride)


def last_named(last: str) -> Callable[[nn.Module], str | None]:
    """Default-layer rule: the last module whose own name is ``last`` (``"ln_1"``)."""

    def rule(module: nn.Module) -> str | None:
        found = [n for n, _ in module.named_modules() if n.rsplit(".", 1)[-1] == last]
        return found[-1] if found else None

    return rule


def last_child(container: str) -> Callable[[nn.Module], str | None]:
    """Default-layer rule: the last child of ``container`` (``"features"`` -> ``"features.7"``)."""

    def rule(module: nn.Module) -> str | None:
        children = list(module.get_submodule(container).named_children())
        return f"{container}.{children[-1][0]}" if children else None

    return rule


def _mro_of(prefix: str, *names: str) -> Callable[[nn.Module], bool]:
    """Matches classes with an ancestor named ``names`` (any, if none) under ``prefix``: a
    user's subclass of a MONAI network is recognised as the network."""

    def match(m: nn.Module) -> bool:
        return any(
            c.__module__.startswith(prefix) and (not names or c.__name__ in names)
            for c in type(m).__mro__
        )

    return match


def _conv_out(n: int, conv: Any, axis: int) -> int:
    """The output length of ``conv`` (a ConvNd) along ``axis`` for an input of length ``n``."""
    k, s, p, d = (pair3(getattr(conv, a))[axis] for a in
                  ("kernel_size", "stride", "padding", "dilation"))
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def pair3(v: Any) -> tuple[int, ...]:
    """``2 -> (2, 2, 2)``; ``(1, 2, 2) -> (1, 2, 2)``."""
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * 3


def _mvit_grids(m: nn.Module) -> tuple[tuple[int, ...], ...]:
    """torchvision MViT's token grids ``(t, h, w)``: the patch embedding's (the model's own
    ``pos_encoding`` sizes, fixed at construction), then the grid after each block whose query
    pooling changes it (``attn.pool_q.pool``, a strided Conv3d: ``(n + 2p - k) // s + 1``)."""
    enc: Any = m.pos_encoding
    grid = (int(enc.temporal_size), *(int(v) for v in enc.spatial_size))
    grids = [grid]
    for block in m.blocks:  # type: ignore[union-attr]
        pool = getattr(block.attn, "pool_q", None)
        if pool is None:
            continue
        grid = tuple(_conv_out(n, pool.pool, i) for i, n in enumerate(grid))
        if grid != grids[-1]:
            grids.append(grid)
    return tuple(grids)


def _is_conv1d_net(m: nn.Module) -> bool:
    """A 1-D CNN: a model with ``nn.Conv1d`` layers and no 2-D or 3-D convolution (its
    ``(B, C, L)`` outputs are maps, not tokens)."""
    kinds = {type(x) for x in m.modules()}
    convs = [k for k in kinds if issubclass(k, nn.modules.conv._ConvNd)]
    return any(issubclass(k, nn.Conv1d) for k in convs) and not any(
        issubclass(k, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d))
        for k in convs
    )


_POOLS_1D = (nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.AvgPool1d, nn.MaxPool1d)
# Element-wise modules that may follow a convolution before its pooling: the map the pool sees
# is theirs (a ReLU'd map, as ``layer4`` of a ResNet is).
_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Tanh,
    nn.BatchNorm1d, nn.InstanceNorm1d, nn.GroupNorm,
)


def _last_conv1d(m: nn.Module) -> str | None:
    """A 1-D CNN's default layer: its last ``nn.Conv1d`` before the last 1-D pooling (in the
    order the modules are registered; the last ``Conv1d`` when no pooling follows one), or the
    last of the element-wise modules (activation, norm) registered right after it: the map the
    pool sees. A 1 x 1 convolution after the global pool (a convolutional classifier) is not a
    map."""
    order = [(n, x) for n, x in m.named_modules() if n]
    convs = [i for i, (_, x) in enumerate(order) if isinstance(x, nn.Conv1d)]
    pools = [i for i, (_, x) in enumerate(order) if isinstance(x, _POOLS_1D)]
    if not convs:
        return None
    before = [i for i in convs if pools and i < pools[-1]]
    at = (before or convs)[-1]
    while at + 1 < len(order) and isinstance(order[at + 1][1], _ELEMENTWISE):
        at += 1
    return order[at][0]


# ----------------------------------------------------------------------------- the records
# Default layers, relative to the recognised module. ViT-style models: the output of the last
# block's first norm (what the field recommends: the last block's output feeds only the class
# token, so its patch tokens get no gradient); Swin: the last stage (channels-last maps or
# tokens, read by the layouts); MaxViT: the last block; segmentation models: the backbone's last
# stage (the generic rule would pick the head, whose map is the class's logits themselves).
# ConvNeXt uses the generic rule.

_TV = "torchvision.models."

#: Every known family, first match wins (timm DeiT before the timm ViT rule it refines).
FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        "torchvision ViT", "vit", _of(_TV, "VisionTransformer"),
        patch_size=lambda m: pair(m.patch_size), num_prefix_tokens=1,
        default_layer=last_named("ln_1"),  # encoder.layers.encoder_layer_11.ln_1
        guided_unsupported=_ATTENTION, attention=_tv_vit_attention,
    ),
    ModelFamily(
        "torchvision Swin", "swin", _of(_TV, "SwinTransformer"), patch_size=_tv_swin_patch,
        default_layer=last_child("features"),  # features.7
        guided_unsupported=_ATTENTION,
    ),
    ModelFamily(
        "torchvision MaxViT", "convnet", _of(_TV, "MaxVit"),
        partitioned=("window_attention", "grid_attention"),
        default_layer=last_child("blocks"),  # blocks.3
        guided_unsupported=_ATTENTION,
    ),
    ModelFamily("torchvision ConvNeXt", "convnet", _of(_TV, "ConvNeXt")),
    ModelFamily(
        "torchvision segmentation", "convnet",  # FCN, DeepLabV3, LRASPP
        lambda m: _of(_TV + "segmentation.")(m) and hasattr(m, "backbone"),
        default_layer=last_child("backbone"),  # backbone.layer4 for ResNets
    ),
    ModelFamily(
        "timm DeiT", "vit", _timm_vit_like(distilled=True), patch_size=_timm_patch(16),
        num_prefix_tokens=_timm_prefix, default_layer=last_named("norm1"),
        guided_unsupported=_ATTENTION, attention=_timm_vit_attention,
    ),
    ModelFamily(
        "timm ViT", "vit", _timm_vit_like(distilled=False), patch_size=_timm_patch(16),
        num_prefix_tokens=_timm_prefix, default_layer=last_named("norm1"),  # blocks.11.norm1
        guided_unsupported=_ATTENTION, attention=_timm_vit_attention,
    ),
    ModelFamily(
        "timm Swin", "swin", _of("timm.", "SwinTransformer", "SwinTransformerV2"),
        patch_size=_timm_patch(4), default_layer=last_child("layers"),  # layers.3
        guided_unsupported=_ATTENTION,
    ),
    ModelFamily("timm ConvNeXt", "convnet", _of("timm.", "ConvNeXt")),
    ModelFamily(
        "HF ViT", "vit", _hf("vit"), patch_size=_hf_patch, num_prefix_tokens=1,
        default_layer=last_named("layernorm_before"),  # vit.layers.11.layernorm_before
        guided_unsupported=_ATTENTION, attention=_hf_vit_attention,
    ),
    ModelFamily(
        "HF DeiT", "vit", _hf("deit"), patch_size=_hf_patch, num_prefix_tokens=2,
        default_layer=last_named("layernorm_before"),
        guided_unsupported=_ATTENTION, attention=_hf_vit_attention,
    ),
    ModelFamily(
        "HF Swin", "swin", _hf("swin", "swinv2"), patch_size=_hf_patch,
        default_layer=last_named("layernorm"),  # swin.layernorm: the last stage, normed
        guided_unsupported=_ATTENTION,
    ),
    ModelFamily("HF ConvNeXt", "convnet", _hf("convnext", "convnextv2")),
    ModelFamily(
        "HF CLIP", "vit", _hf("clip", "clip_vision_model"), patch_size=_hf_vision_patch,
        num_prefix_tokens=1, default_layer=_clip_default_layer,  # the class token, then patches
        guided_unsupported=_ATTENTION, attention=_hf_clip_attention,
    ),
    # Volumes, videos and signals: maps (B, C, *spatial) of the input's rank.
    ModelFamily(
        "MONAI DenseNet", "convnet", _mro_of("monai.networks.nets.densenet", "DenseNet"),
        default_layer=lambda m: "class_layers.relu",  # the ReLU'd last features, before the pool
        maps_channels_first=True,
    ),
    ModelFamily(
        "MONAI ResNet", "convnet", _mro_of("monai.networks.nets.resnet", "ResNet"),
        default_layer=lambda m: "layer4", maps_channels_first=True,
    ),
    ModelFamily(
        "MONAI SENet", "convnet", _mro_of("monai.networks.nets.senet", "SENet"),  # SEResNet50 ...
        default_layer=lambda m: "layer4", maps_channels_first=True,
    ),
    ModelFamily(
        "torchvision video ResNet", "convnet", _of(_TV + "video.", "VideoResNet"),  # r3d, mc3,
        default_layer=lambda m: "layer4", maps_channels_first=True,  # r2plus1d
    ),
    ModelFamily(
        "torchvision S3D", "convnet", _of(_TV + "video.", "S3D"),
        default_layer=lambda m: "features",  # not the 1x1x1-conv classifier after the pool
        maps_channels_first=True,
    ),
    ModelFamily(
        "torchvision MViT", "vit", _of(_TV + "video.", "MViT"), num_prefix_tokens=1,
        default_layer=last_named("norm1"),  # blocks.15.norm1: the class token, then T'H'W'
        guided_unsupported=_ATTENTION, token_grids=_mvit_grids,
    ),
    ModelFamily(
        # Channels-last-looking outputs still checked: a Conv1d front end may feed (B, L, D)
        # sequence layers.
        "1-D CNN", "convnet", _is_conv1d_net, default_layer=_last_conv1d, whole_model=True,
    ),
)


def family_of(module: nn.Module, root: str = "") -> Family | None:
    """The :class:`Family` of ``module`` itself (not its submodules), else ``None``."""
    for record in FAMILIES:
        fam = record.recognise(module, root)
        if fam is not None:
            return fam
    return None


def recognise(model: nn.Module) -> Family | None:
    """The first (outermost) module of ``model`` that belongs to a known family, else ``None``.

    A LightningModule or wrapper holding a ViT is recognised through the ViT inside it.
    Recognition reads class names and attributes only: timm and transformers are never imported.
    """
    for root, m in model.named_modules():
        fam = family_of(m, root)
        if fam is not None:
            return fam
    return None
