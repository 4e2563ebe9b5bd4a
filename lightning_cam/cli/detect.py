"""``lightning-cam detect``: boxes and per-detection CAM heatmaps from the shell.

For every image: ``{stem}-{model}-predict_box.jpg`` (all boxes with class names and scores);
per detection ``k``, layer and method, ``{stem}-{model}-{layer}-{k}-heatmap.jpg`` (Grad-CAM),
``-heatmap++.jpg`` (Grad-CAM++) or ``-{method}-heatmap.jpg`` (any other method of the registry,
``--method``), with the detection's box drawn; ``{stem}-{model}-sheet.jpg`` (all of them, a row
per detection, a column per layer and method); and for the run, ``summary.json`` (boxes,
labels, scores, and the files of each detection by method and layer). An image's files are
written all or none; every file is written atomically.

``--model`` has the alias ``--network``, ``--method`` the alias ``--methods``; ``--layer-name``
is repeatable and takes several names (the flags of :mod:`lightning_cam.cli.common`).

Exit status: 0 when every image was processed (an image without detections above the threshold
is reported, not an error); 1 when some images failed (each is named, the others are done);
2 on bad input (unknown model or layer, unusable weights, no images...), in one line on stderr.

Example:
    $ lightning-cam detect --image-path street.jpg                     # COCO Faster R-CNN
    $ lightning-cam detect --image-path photos/ --model retinanet_resnet50_fpn \\
          --layer-name backbone.body.layer3 --layer-name head.classification_head.conv.0
    $ lightning-cam detect --image-path img.png --weight-path shapes_detector.ckpt --roi
    $ lightning-cam detect --backend detectron2 --image-path street.jpg \\
          --config-file PascalVOC-Detection/faster_rcnn_R_50_C4.yaml \\
          --weight-path model_final.pkl --layer-name backbone.res4 --roi \\
          --opts MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.3
    $ lightning-cam detect --model hf:./detr-folder --image-path img.png --cross-attention

``--model hf:<folder>``: a transformers DETR-family detector saved with ``save_pretrained``
(DETR, Conditional / Deformable DETR, RT-DETR v1/v2; its ``preprocessor_config.json`` sets the
input size), explained per query (:mod:`lightning_cam.detection.detr`); ``--cross-attention``
also writes each detection's decoder cross-attention, ``{stem}-{model}-cross_attention-{k}-
heatmap.jpg`` (DETR, Conditional DETR).
    $ lightning-cam detect --image-path street.jpg --model yolo:best.pt     # ultralytics YOLO
    $ lightning-cam detect --image-path img.png --model yolo:yolo11n.yaml --max-size 320

With ``--backend detectron2`` (detectron2 installed from source), the detector is built from a
detectron2 config (a model-zoo name or a YAML file, ``--opts KEY VALUE ...`` merged in) and its
checkpoint ``--weight-path`` (required; ``--random-weights`` runs untrained weights, for testing
only); class names come from detectron2's dataset metadata.

With ``--model yolo:<file.pt | config.yaml>`` (ultralytics installed), the detector is an
ultralytics YOLO ``DetectionModel`` (a checkpoint, or a config with random weights, seeded);
``--max-size`` is its letterbox size (default: the checkpoint's training ``imgsz``, else 640),
the default layer the neck outputs feeding its head (``neck``), the default method
Seg-Eigen-CAM (what localised a YOLO's detections best), class names its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
    add_weight_argument,
    default_images,
    one_line,
    output_folder,
    read_class_names,
    run_main,
    selected_methods,
    write_text_atomic,
)

PROG = "lightning-cam detect"
SUMMARY_FILE = "summary.json"
DEFAULT_MODEL = "fasterrcnn_resnet50_fpn"
#: ``--model hf:<folder>``: a transformers DETR-family ``save_pretrained`` folder.
HF_PREFIX = "hf:"
#: ``--model yolo:<pt|yaml>``: an ultralytics YOLO detection model.
YOLO_PREFIX = "yolo:"
#: The original tool's file suffixes; any other method ``m`` writes ``{m}-heatmap``.
_ORIGINAL_SUFFIX = {"gradcam": "heatmap", "gradcam++": "heatmap++"}


def heatmap_suffix(method: str) -> str:
    """The file suffix of a method's per-detection heatmaps: ``heatmap`` (Grad-CAM),
    ``heatmap++`` (Grad-CAM++), ``{method}-heatmap`` for every other method."""
    return _ORIGINAL_SUFFIX.get(method, f"{method}-heatmap")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lightning-cam detect``."""
    from lightning_cam.detection.architectures import DETECTORS
    from lightning_cam.detection.base import DEFAULT_METHODS, detection_methods

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Explain the detections of a torchvision or detectron2 detector: predicted "
        "boxes and a CAM heatmap per detection, layer and method.",
    )
    add_image_path_argument(p)
    p.add_argument("--backend", choices=("torchvision", "detectron2"), default="torchvision",
                   help="detection library of the model (detectron2: install it from source; "
                   "default: torchvision)")
    add_model_argument(p, f"torchvision detector: {', '.join(DETECTORS)} (default: "
                       f"{DEFAULT_MODEL}, or the architecture of a ShapesDetector checkpoint); "
                       f"{HF_PREFIX}<folder>: a transformers DETR-family save_pretrained folder; "
                       f"or {YOLO_PREFIX}<file.pt|config.yaml>, an ultralytics YOLO model")
    add_weight_argument(p, "a state_dict file or a ShapesDetector Lightning checkpoint; default: "
                        "torchvision's DEFAULT (COCO) weights, from the torch cache or "
                        "downloaded. detectron2: the model's checkpoint (e.g. model_final.pkl), "
                        "required")
    p.add_argument("--config-file", default=None, metavar="CONFIG",
                   help="detectron2: a model-zoo config (e.g. "
                   "COCO-Detection/retinanet_R_50_FPN_3x.yaml) or a YAML config file")
    p.add_argument("--opts", nargs="+", action="extend", default=None, metavar="KEY VALUE",
                   help="detectron2: config options as KEY VALUE pairs (e.g. "
                   "MODEL.RETINANET.SCORE_THRESH_TEST 0.2 INPUT.MIN_SIZE_TEST 600)")
    p.add_argument("--random-weights", action="store_true",
                   help="detectron2: random (seeded) weights instead of --weight-path, for "
                   "testing only: the maps mean nothing")
    add_layer_argument(p, "layer(s) to explain, dotted names of the detector (e.g. "
                       "backbone.body.layer3 head.classification_head.conv.0); default: the "
                       "backbone's last stage")
    add_method_argument(p, "a heatmap per detection and layer", DEFAULT_METHODS,
                        detection_methods())
    p.add_argument("--cross-attention", action="store_true",
                   help="hf: models: also the decoder cross-attention of each detection's query "
                   "(DETR, Conditional DETR)")
    p.add_argument("--roi", action="store_true",
                   help="also RoI-level heatmaps (Faster R-CNN): the CAM of the proposal's RoI "
                   "features, pasted into the proposal box")
    p.add_argument("--score-threshold", type=float, default=0.5, metavar="S",
                   help="explain detections scoring at least this (default: 0.5)")
    p.add_argument("--top-k", type=int, default=10, metavar="K",
                   help="explain at most this many detections per image (default: 10)")
    add_class_names_argument(p, "line i = label i (a file without the background line gets "
                             "'__background__' prepended; detectron2: labels start at 0, no "
                             "background line; default: the dataset metadata)")
    p.add_argument("--min-size", type=int, default=None, metavar="N",
                   help="the detector's input size (shorter side; default: the model's own; "
                   "detectron2: INPUT.MIN_SIZE_TEST)")
    p.add_argument("--max-size", type=int, default=None, metavar="N",
                   help="limit of the longer side (default: the model's own)")
    add_output_dir_argument(p)
    add_device_argument(p)
    add_common_flags(p, "no per-image report")
    return p


def _class_names(
    path: str | None, meta_names: list[str] | None, num_classes: int
) -> list[str] | None:
    if path is None:
        return meta_names
    names = read_class_names(path)
    if len(names) == num_classes - 1:
        names = ["__background__", *names]
    return names


def _file_tag(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._+-" else "_" for c in text)


def _resolve_detector(name: str) -> str:
    from lightning_cam.detection.architectures import resolve_detector

    return resolve_detector(name)


def _torchvision_explainer(
    args: argparse.Namespace, methods: list[str]
) -> tuple[Any, str, str, dict[str, Any]]:
    """The torchvision detector's explainer, its name, where its weights came from."""
    from lightning_cam.detection.adapter import DetectionExplainer
    from lightning_cam.detection.zoo import build_detector, configure_detector

    name = args.model if args.model is not None or args.weight_path else DEFAULT_MODEL
    detector, meta = build_detector(
        name, args.weight_path, device=args.device, min_size=args.min_size,
        max_size=args.max_size,
    )
    configure_detector(detector, args.score_threshold, args.top_k)
    class_names = _class_names(args.class_names, meta.categories, meta.num_classes)
    explainer = DetectionExplainer(
        detector, layer=args.layer_name, methods=methods,
        score_threshold=args.score_threshold, top_k=args.top_k, roi_cams=args.roi,
        class_names=class_names,
    )
    return explainer, meta.name, meta.weights, {}


def _is_hf(args: argparse.Namespace) -> bool:
    return isinstance(args.model, str) and args.model.startswith(HF_PREFIX)


def _check_hf_args(args: argparse.Namespace) -> None:
    """Options that do not apply to a transformers DETR folder, before any work."""
    for flag, given in (("--backend detectron2", args.backend == "detectron2"),
                        ("--weight-path", args.weight_path is not None), ("--roi", args.roi),
                        ("--min-size", args.min_size is not None),
                        ("--max-size", args.max_size is not None),
                        ("--config-file", args.config_file is not None),
                        ("--opts", bool(args.opts)), ("--random-weights", args.random_weights)):
        if given:
            raise CLIError(f"{flag} does not apply to --model {args.model}: the folder holds the "
                           "weights and, in preprocessor_config.json, the input size")
    if not (Path(args.model[len(HF_PREFIX):]).expanduser() / "config.json").is_file():
        raise CLIError(f"--model {args.model}: not a save_pretrained folder (no config.json)")


def _hf_explainer(
    args: argparse.Namespace, methods: list[str]
) -> tuple[Any, str, str, dict[str, Any]]:
    """The explainer of a transformers DETR-family folder, its name, where its weights are."""
    from lightning_cam.detection.detr import DetrExplainer, load_detr_model

    folder = args.model[len(HF_PREFIX):]
    try:
        model, processor = load_detr_model(folder, device=args.device)
    except ImportError as err:
        raise CLIError(str(err)) from err
    class_names = read_class_names(args.class_names) if args.class_names else None
    explainer = DetrExplainer(
        model, processor, layer=args.layer_name, methods=methods,
        score_threshold=args.score_threshold, top_k=args.top_k,
        cross_attention=args.cross_attention, class_names=class_names,
    )
    name = _file_tag(Path(folder).expanduser().resolve().name)
    return explainer, name, str(folder), {"model_class": type(model).__name__}


def _check_detectron2_args(args: argparse.Namespace) -> None:
    """Bad combinations of detectron2 options, before any work."""
    if args.model is not None:
        raise CLIError("--model is for the torchvision backend; with --backend detectron2 give "
                       "--config-file (a detectron2 config)")
    if args.config_file is None:
        raise CLIError("--backend detectron2 needs --config-file: a model-zoo config such as "
                       "COCO-Detection/retinanet_R_50_FPN_3x.yaml, or a YAML config file")
    if args.weight_path is None and not args.random_weights:
        raise CLIError("--backend detectron2 needs --weight-path: the model's checkpoint (e.g. "
                       "model_final.pkl of detectron2's model zoo). (--random-weights runs "
                       "untrained weights, for testing only.)")
    if args.weight_path is not None and args.random_weights:
        raise CLIError("give either --weight-path or --random-weights, not both")
    if args.opts and len(args.opts) % 2:
        raise CLIError(f"--opts takes KEY VALUE pairs, got {len(args.opts)} items: "
                       f"{' '.join(args.opts)}")
    from lightning_cam.detection.detectron2 import require_detectron2

    try:
        require_detectron2()
    except ImportError as err:
        raise CLIError(str(err)) from err


def _detectron2_explainer(
    args: argparse.Namespace, methods: list[str]
) -> tuple[Any, str, str, dict[str, Any]]:
    """The detectron2 model's explainer, its name (the config's), where its weights came from."""
    from lightning_cam.detection.detectron2 import (
        Detectron2Explainer,
        build_detectron2_model,
        detectron2_class_names,
    )
    opts: list[Any] = list(args.opts or [])
    if args.min_size is not None:
        opts += ["INPUT.MIN_SIZE_TEST", args.min_size]
    if args.max_size is not None:
        opts += ["INPUT.MAX_SIZE_TEST", args.max_size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # --random-weights: the same weights every run
        model, cfg = build_detectron2_model(
            args.config_file, args.weight_path, opts, device=args.device,
            score_threshold=args.score_threshold, top_k=args.top_k,
        )
    if args.class_names is not None:
        class_names: list[str] | None = read_class_names(args.class_names)
    else:
        class_names = detectron2_class_names(cfg)
    explainer = Detectron2Explainer(
        model, cfg, layer=args.layer_name, methods=methods,
        score_threshold=args.score_threshold, top_k=args.top_k, roi_cams=args.roi,
        class_names=class_names,
    )
    name = Path(str(args.config_file)).name
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    weights = str(args.weight_path) if args.weight_path is not None else "random"
    return explainer, _file_tag(name), weights, {"config_file": str(args.config_file)}


def _is_yolo(args: argparse.Namespace) -> bool:
    return isinstance(args.model, str) and args.model.startswith(YOLO_PREFIX)


def _check_yolo_args(args: argparse.Namespace) -> None:
    """Options that mean nothing for an ultralytics YOLO model, and ultralytics installed."""
    if not args.model[len(YOLO_PREFIX):]:
        raise CLIError(f"--model {YOLO_PREFIX} needs a file: {YOLO_PREFIX}best.pt or "
                       f"{YOLO_PREFIX}yolo11n.yaml")
    for flag, given in (("--backend detectron2", args.backend == "detectron2"),
                        ("--weight-path", args.weight_path is not None),
                        ("--roi", args.roi), ("--min-size", args.min_size is not None)):
        if given:
            raise CLIError(f"{flag} is not for --model {YOLO_PREFIX}... (the weights are the .pt "
                           "file; --max-size is the letterbox size; no RoI heads)")
    try:
        import ultralytics  # noqa: F401
    except ImportError as err:
        raise CLIError(f"--model {YOLO_PREFIX}... needs ultralytics: pip install "
                       f"'ultralytics>=8.1' ({err})") from err


def _yolo_explainer(
    args: argparse.Namespace, methods: list[str]
) -> tuple[Any, str, str, dict[str, Any]]:
    """The ultralytics YOLO model's explainer, its name (the file's stem), its weights."""
    from lightning_cam.detection.yolo import YOLOExplainer, load_yolo

    source = args.model[len(YOLO_PREFIX):]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a config's random weights: the same every run
        model = load_yolo(source, device=args.device)
    class_names = read_class_names(args.class_names) if args.class_names is not None else None
    explainer = YOLOExplainer(
        model, layer=args.layer_name, methods=methods, score_threshold=args.score_threshold,
        top_k=args.top_k, class_names=class_names, imgsz=args.max_size,
    )
    random = source.lower().endswith((".yaml", ".yml"))
    return explainer, _file_tag(Path(source).stem), "random" if random else source, {}


def _check_args(args: argparse.Namespace) -> list[str]:
    """Step 1: the numbers and the backend's options checked; the methods to run."""
    from lightning_cam.detection.base import DEFAULT_METHODS

    if not 0.0 <= args.score_threshold <= 1.0:
        raise CLIError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    if args.top_k < 1:
        raise CLIError(f"--top-k must be >= 1, got {args.top_k}")
    for flag, value in (("--min-size", args.min_size), ("--max-size", args.max_size)):
        if value is not None and value < 32:
            raise CLIError(f"{flag} must be >= 32, got {value}")
    if args.cross_attention and not _is_hf(args):
        raise CLIError("--cross-attention is for transformers DETR models (--model hf:<folder>)")
    if _is_hf(args):
        _check_hf_args(args)
    elif _is_yolo(args):
        _check_yolo_args(args)
    elif args.backend == "detectron2":
        _check_detectron2_args(args)
    else:
        for flag, given in (("--config-file", args.config_file is not None),
                            ("--opts", bool(args.opts)), ("--random-weights", args.random_weights)):
            if given:
                raise CLIError(f"{flag} is for --backend detectron2")
        if args.roi and args.model and not _resolve_detector(args.model).startswith("fasterrcnn"):
            raise CLIError(f"--roi needs a two-stage detector (Faster R-CNN); {args.model} has no "
                           "RoI heads")
    if _is_yolo(args):
        from lightning_cam.detection.yolo import YOLO_DEFAULT_METHODS

        return selected_methods(args, YOLO_DEFAULT_METHODS)
    return selected_methods(args, DEFAULT_METHODS)


def _explain_image(
    src: Any, explainer: Any, model: str, out_dir: Path
) -> tuple[dict[str, Any], Any]:
    """Step 3, one image: its record and result; all of its files written, or none."""
    from lightning_cam.detection.render import detection_heatmap, draw_detections, render_detection
    from lightning_cam.tools.image_io import save_images

    image = src.load()
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)
    result = explainer(tensor)
    stem = src.name
    record: dict[str, Any] = {"image": src.label, "stem": stem, **result.to_dict()}
    pictures: dict[str | os.PathLike[str], np.ndarray] = {}
    files = {"predict_box": f"{stem}-{model}-predict_box.jpg",
             "sheet": f"{stem}-{model}-sheet.jpg"}
    pictures[out_dir / files["predict_box"]] = draw_detections(image, result)
    for det in record["detections"]:
        k = det["index"]
        det["files"] = {method: {} for method in result.methods}
        for method in result.methods:
            suffix = heatmap_suffix(method)
            for layer in result.layers:
                name = f"{stem}-{model}-{_file_tag(layer)}-{k}-{suffix}.jpg"
                pictures[out_dir / name] = detection_heatmap(image, result, k, method, layer)
                det["files"][method][layer] = name
        for key in result.attention_maps:
            name = f"{stem}-{model}-{key}-{k}-heatmap.jpg"
            pictures[out_dir / name] = detection_heatmap(image, result, k, key)
            det["files"][key] = {"decoder": name}
    pictures[out_dir / files["sheet"]] = render_detection(image, result)
    save_images(pictures)  # all of the image's files, or none
    record["files"] = files
    return record, result


def _report(args: argparse.Namespace, src: Any, record: dict[str, Any], result: Any) -> None:
    """What one image gave, in one line (no detection: a note on stderr)."""
    if len(result) == 0:
        record["message"] = f"no detection above the threshold {args.score_threshold:g}"
        print(f"{PROG}: {src.label}: no detection above the threshold "
              f"{args.score_threshold:g} (try a lower --score-threshold)", file=sys.stderr)
    elif not args.quiet:
        found = ", ".join(f"{n} {s:.2f}" for n, s in
                          zip(result.label_names(), result.scores.tolist(), strict=True))
        print(f"{src.label}: {len(result)} detection(s): {found}")


def run(args: argparse.Namespace) -> int:
    """Run ``lightning-cam detect`` with parsed arguments; returns the exit status.

    Raises:
        CLIError, ValueError, OSError, RuntimeError: Bad input (reported by :func:`main`).
    """
    from lightning_cam.tools.image_io import collect_images

    methods = _check_args(args)
    sources = collect_images(args.image_path if args.image_path else default_images())
    build = (_hf_explainer if _is_hf(args) else _yolo_explainer if _is_yolo(args)
             else _detectron2_explainer if args.backend == "detectron2"
             else _torchvision_explainer)
    explainer, model, weights, extra = build(args, methods)
    out_dir = output_folder(args.output_dir)
    records: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for src in sources:
        try:
            record, result = _explain_image(src, explainer, model, out_dir)
        except (ValueError, OSError, RuntimeError, TypeError) as err:
            failures.append({"image": src.label, "error": one_line(err)})
            print(f"{PROG}: failed on {src.label}: {one_line(err)}", file=sys.stderr)
            continue
        _report(args, src, record, result)
        records.append(record)
    summary = {
        "backend": ("hf" if _is_hf(args) else "ultralytics" if _is_yolo(args)
                    else args.backend), "model": model, **extra,
        "weights": weights,
        "score_threshold": args.score_threshold, "top_k": args.top_k,
        "layers": explainer.result_layers, "methods": list(explainer.methods),
        "images": records, "failures": failures,
    }
    write_text_atomic(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    if failures:
        print(f"{PROG}: {len(failures)} image(s) failed: "
              f"{', '.join(f['image'] for f in failures)}", file=sys.stderr)
    if not args.quiet:
        print(f"{len(records)} image(s) explained, written to {out_dir}")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightning-cam detect``; returns the exit status."""
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
