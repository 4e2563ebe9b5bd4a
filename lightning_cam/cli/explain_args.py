"""The arguments of ``lightning-cam explain`` and its dataset mode ``explain --data``: one
parser (:func:`build_parser`) and the mode it selects (:func:`resolve_mode`). Both runners
read them: :mod:`lightning_cam.cli.explain` (images) and :mod:`lightning_cam.cli.data` (a
dataset on Lightning's predict loop), so neither imports the other's module for its flags."""

from __future__ import annotations

import argparse
from typing import Any

from lightning_cam.cli.common import (
    CLIError,
    add_class_names_argument,
    add_common_flags,
    add_device_argument,
    add_image_path_argument,
    add_layer_argument,
    add_method_argument,
    add_model_argument,
    add_output_dir_argument,
    add_reshape_transform_argument,
    add_weight_argument,
)

__all__ = ["DEFAULT_NETWORK", "PROG", "build_parser", "resolve_mode", "resolve_target"]

PROG = "lightning-cam explain"

DEFAULT_NETWORK = "resnet50"


#: Flags of one mode only, with their defaults: ``dest -> (flag, default)``. They are parsed
#: without a default (argparse.SUPPRESS) so that a flag of the other mode can be refused.
_IMAGE_ONLY: dict[str, tuple[str, Any]] = {
    "image_path": ("--image-path", None),
    "class_id": ("--class-id", None),
    "device": ("--device", "cpu"),
    "class_names": ("--class-names", None),
    "reshape_transform": ("--reshape-transform", "auto"),
}
_DATA_ONLY: dict[str, tuple[str, Any]] = {
    "metrics": ("--metrics", None),
    "num_workers": ("--num-workers", 0),
    "accelerator": ("--accelerator", "cpu"),
    "devices": ("--devices", "1"),
    "strategy": ("--strategy", "auto"),
    "precision": ("--precision", None),
    "map_size": ("--map-size", "layer"),
    "map_dtype": ("--map-dtype", "float16"),
    "shard_size": ("--shard-size", 1024),
    "overlays": ("--overlays", 0),
    "sanity_samples": ("--sanity-samples", 0),
    "guided_gradcam": ("--guided-gradcam", False),
    "raw_maps": ("--raw-maps", False),
}
#: Flags of both modes whose default differs: ``dest -> (images default, --data default)``.
_MODE_DEFAULTS: dict[str, tuple[Any, Any]] = {
    "output_dir": ("results", None),
    "batch_size": (8, 16),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lightning-cam explain`` and ``lightning-cam explain --data``
    (the dataset mode, :mod:`lightning_cam.cli.data`)."""
    from lightning_cam.methods import DEFAULT_METHODS

    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Explain image classifiers: Grad-CAM, Grad-CAM++, guided backprop and guided "
            "Grad-CAM pictures for every image and network (the Grad-CAM.pytorch tool's outputs). "
            "With --data DIR: explain and evaluate every image of a folder on Lightning's predict "
            "loop (shards of maps, a Parquet manifest, a summary; resumable)."
        ),
    )
    no = argparse.SUPPRESS
    add_model_argument(
        p, f"network name(s), comma- or space-separated, or 'all' (the seed networks); any "
        f"torchvision classifier name works, and timm:<name> / hf:<save_pretrained folder> "
        f"(default: {DEFAULT_NETWORK}, or the backbone of a lightning-cam checkpoint given with "
        "--weight-path; --data: one network)", several=True)
    add_weight_argument(
        p, "weights: a state_dict file (.pth/.pt) or a Lightning checkpoint of a lightning-cam "
        "model; one per network, in the order of --model ('default' keeps torchvision's); "
        "default: torchvision's DEFAULT weights (local torch cache, or a download when online)",
        several=True)
    add_layer_argument(p, "layer to explain, a dotted module name (default: the last "
                       "convolutional stage; several layers: --data only)")
    add_method_argument(p, "a heatmap and an overlay each", DEFAULT_METHODS)
    add_output_dir_argument(p, default=no,
                            help="output folder (default: results; required with --data)")
    p.add_argument("--batch-size", type=int, default=no, metavar="N",
                   help="images per forward pass (default: 8; --data: 16)")
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="model input side (default: the network's own, 299 for inception_v3, "
                   "else 224)")
    p.add_argument("--target", default=None, metavar="SPEC",
                   help="what is explained: pred (default: each image's predicted class), "
                   "label (--data: the class folders), a class id N, binary / binary:negative "
                   "(a single-logit head (B, 1): its logit z / -z), or "
                   "regression:INDEX[:increase|decrease] (an output of a regression head)")
    add_common_flags(p, "no progress bar and no final line (--data: no summary table)")

    _add_image_arguments(p.add_argument_group("images (without --data)"))
    _add_data_arguments(p.add_argument_group("a dataset (explain --data DIR)"))
    return p


def _add_image_arguments(group: Any) -> None:
    """The flags of the images mode (refused with ``--data``)."""
    no = argparse.SUPPRESS
    add_image_path_argument(group, default=no)
    add_reshape_transform_argument(group, default=no)
    group.add_argument("--class-id", type=int, default=no, metavar="N",
                       help="class to explain (default: the predicted class of each image); "
                       "the same as --target N")
    add_device_argument(group, default=no)
    add_class_names_argument(group, "line i = class id i; default: the names the weights carry "
                             "(ImageNet's for torchvision heads)", default=no)


def _add_data_arguments(group: Any) -> None:
    """``--data`` and the flags of the dataset mode (refused without it)."""
    from lightning_cam.metrics import METRIC_NAMES

    no = argparse.SUPPRESS
    group.add_argument("--data", default=None, metavar="DIR",
                       help="folder of images, or an ImageFolder tree (DIR/<class>/<image>), "
                       "explained on Lightning's predict loop")
    group.add_argument("--metrics", nargs="*", default=no, metavar="NAME",
                       help=f"per-image metrics among {', '.join(METRIC_NAMES)} (default: "
                       "average_drop increase_in_confidence; the localisation metrics need masks "
                       "or boxes, which folders do not have)")
    group.add_argument("--num-workers", type=int, default=no, metavar="N",
                       help="DataLoader worker processes (default: 0)")
    group.add_argument("--accelerator", default=no, help="Trainer accelerator (default: cpu)")
    group.add_argument("--devices", default=no, help="Trainer devices (default: 1)")
    group.add_argument("--strategy", default=no, help="Trainer strategy, e.g. ddp")
    group.add_argument("--precision", default=no, help="Trainer precision, e.g. bf16-mixed")
    group.add_argument("--map-size", choices=("layer", "input"), default=no,
                       help="maps at the layer's resolution or the input's (default: layer)")
    group.add_argument("--map-dtype", choices=("float16", "uint8"), default=no,
                       help="stored maps' dtype (default: float16)")
    group.add_argument("--raw-maps", action="store_true", default=no,
                       help="store each map's raw scale too (CAMWriter(normalize=False)): "
                       "load_maps returns the method's raw map, comparable across images")
    group.add_argument("--shard-size", type=int, default=no, metavar="N",
                       help="images per shard (default: 1024)")
    group.add_argument("--overlays", type=int, default=no, metavar="N",
                       help="overlay pictures of the first N images")
    group.add_argument("--sanity-samples", type=int, default=no, metavar="N",
                       help="images for the cascading randomisation sanity check (default: off)")
    group.add_argument("--guided-gradcam", action="store_true", default=no,
                       help="also store guided backprop and guided Grad-CAM")


def resolve_mode(args: argparse.Namespace) -> str:
    """``"data"`` (``--data`` given) or ``"images"``; fills in the mode's defaults.

    Raises:
        CLIError: A flag of the other mode was given.
    """
    data = args.data is not None
    wrong, own = (_IMAGE_ONLY, _DATA_ONLY) if data else (_DATA_ONLY, _IMAGE_ONLY)
    given = [flag for dest, (flag, _) in wrong.items() if hasattr(args, dest)]
    if given:
        flags = ", ".join(given)
        if data:
            raise CLIError(f"{flags}: not for explain --data (they are for explaining images, "
                           "without --data)")
        raise CLIError(f"{flags}: only for explain --data DIR (a dataset on the predict loop)")
    for dest, (_, default) in own.items():
        if not hasattr(args, dest):
            setattr(args, dest, default)
    for dest, defaults in _MODE_DEFAULTS.items():
        if not hasattr(args, dest):
            setattr(args, dest, defaults[data])
    if not data and args.layer_name and len(args.layer_name) > 1:
        raise CLIError(f"explain takes one --layer-name for images, got {len(args.layer_name)}: "
                       f"{' '.join(args.layer_name)} (explain --data takes several)")
    args.target = resolve_target(args)
    return "data" if data else "images"


def resolve_target(args: argparse.Namespace) -> str | int:
    """The canonical target spec of ``--target`` and its alias ``--class-id N`` (``--target
    N``): :func:`lightning_cam.engine.target_spec.parse_target_spec`.

    Raises:
        CLIError: A spec that does not parse, both flags given with different targets, or
            ``labels`` (multi-label heads are explained from Python).
    """
    from lightning_cam.engine.target_spec import SPEC_FORMS, parse_target_spec

    spec, class_id = getattr(args, "target", None), getattr(args, "class_id", None)
    try:
        choice = parse_target_spec(spec)
    except ValueError as err:
        raise CLIError(f"--target: {err}") from None
    if class_id is not None:
        if class_id < 0:
            raise CLIError(f"--class-id must be >= 0, got {class_id}")
        if spec is not None and choice.spec != class_id:
            raise CLIError(f"--class-id {class_id} and --target {spec} disagree: --class-id N "
                           "is --target N; give one of them")
        return class_id
    if choice.kind == "labels":
        raise CLIError(f"--target labels: the CLI explains one target per image; {SPEC_FORMS} "
                       "minus 'labels'. A multi-label head's labels are explained from Python: "
                       "lightning_cam.explain_multilabel, or CAMCallback(target='labels')")
    return choice.spec
