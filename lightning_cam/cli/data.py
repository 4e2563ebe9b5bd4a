"""``lightning-cam explain --data DIR``: a folder of images through Lightning's predict loop.

``DIR`` is a folder of images (every image file below it, recursively) or an ImageFolder tree
(``DIR/<class>/<image>``: a class folder's label is the model's class id of that name when the
model has class names; without them, the index of the folder in sorted order, as
``torchvision.datasets.ImageFolder``). A file that cannot be read (macOS ``._*.jpg`` junk, a
truncated download) is skipped: its manifest row says ``status = "unreadable: <reason>"``.
A zoo classifier (torchvision name + weights, or a lightning-cam checkpoint) explains every
image with :class:`~lightning_cam.predict.CAMWriter` on ``trainer.predict``: ``--devices`` /
``--strategy`` / ``--accelerator`` go to the Trainer (e.g. ``--strategy ddp --devices 2``), and
a rerun with the same arguments resumes (the same data only: another folder, other files or
another ``--image-size`` in the same output folder is refused).

Example:
    $ lightning-cam explain --data photos/ --output-dir audit --network resnet50
    $ lightning-cam explain --data val/ --output-dir audit --weight-path model.ckpt \\
          --strategy ddp --devices 4 --accelerator gpu
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import Dataset

from lightning_cam.cli.common import CLIError, one_line, run_main, selected_methods
from lightning_cam.tools.image_io import IMAGE_EXTENSIONS

PROG = "lightning-cam explain --data"
#: The image files taken from ``--data`` (:data:`lightning_cam.tools.image_io.IMAGE_EXTENSIONS`).
IMAGE_SUFFIXES = IMAGE_EXTENSIONS


class ImageFolderDataset(Dataset):
    """Every image below ``root`` as ``{"image", "id"}`` (resized, normalised), with
    ``"label"`` for an ImageFolder tree; ``id`` is the path relative to ``root``.

    Args:
        root: A folder of images, or an ImageFolder tree (one sub-folder per class).
        image_size: Square side the images are resized to (the whole image, no crop).
        mean: Per-channel normalisation mean (RGB, images in [0, 1]).
        std: Per-channel normalisation std.
        class_names: The model's class names (index = class id): the class folders of a tree
            are mapped to these ids by name. ``None``: the sorted folder index.

    Every sample has a ``"status"``: ``"ok"``, or ``"unreadable: <reason>"`` for a file that
    cannot be decoded (its image is then zeros, which the writer records and does not explain).

    Raises:
        FileNotFoundError: ``root`` is not a folder or holds no image.
        ValueError: Class folders whose names are not among ``class_names`` (when some are).
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"--data {str(self.root)!r} is not a folder")
        self.files = sorted(
            p
            for p in self.root.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.files:
            raise FileNotFoundError(
                f"No image files ({', '.join(sorted(IMAGE_SUFFIXES))}) below {str(self.root)!r}"
            )
        classes = sorted(
            {p.relative_to(self.root).parts[0] for p in self.files if p.parent != self.root}
        )
        tree = bool(classes) and all(p.parent != self.root for p in self.files)
        self.classes: list[str] | None = classes if tree else None
        #: Label of each class folder.
        self.class_ids: dict[str, int] = {c: i for i, c in enumerate(classes)}
        if self.classes is not None and class_names:
            names = [str(n) for n in class_names]
            unknown = [c for c in self.classes if c not in names]
            if len(unknown) < len(self.classes):
                if unknown:
                    import difflib

                    hints = [
                        f"{c!r} (close: {', '.join(close)})" if close else repr(c)
                        for c in unknown[:5]
                        for close in [difflib.get_close_matches(c, names, 3)]
                    ]
                    raise ValueError(
                        f"--data {str(self.root)!r}: class folder(s) {', '.join(hints)} are not "
                        f"among the model's {len(names)} class names: rename the folders to "
                        "the model's class names, or use a flat folder (no labels)."
                    )
                self.class_ids = {c: names.index(c) for c in self.classes}
            # no folder name is a class name (e.g. ImageNet's wnids): the sorted folder index
        self.image_size = int(image_size)
        self.mean = torch.tensor(list(mean), dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(list(std), dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from lightning_cam.tools import viz

        path = self.files[index]
        s = self.image_size
        rel = path.relative_to(self.root)
        try:
            image = viz.load_image(path)
        except (OSError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            return self._sample(torch.zeros(3, s, s), rel, f"unreadable: {reason}")
        h, w = image.shape[:2]
        interp = cv2.INTER_AREA if (h > s and w > s) else cv2.INTER_LINEAR
        x = torch.from_numpy(np.ascontiguousarray(cv2.resize(image, (s, s), interpolation=interp)))
        x = x.permute(2, 0, 1).float().div(255.0)
        return self._sample((x - self.mean) / self.std, rel, "ok")

    def _sample(self, image: torch.Tensor, rel: Path, status: str) -> dict[str, Any]:
        sample: dict[str, Any] = {"image": image, "id": rel.as_posix(), "status": status}
        if self.classes is not None:  # an ImageFolder tree: the class folder is the label
            sample["label"] = torch.tensor(self.class_ids[rel.parts[0]], dtype=torch.long)
        return sample


class ZooClassifier(pl.LightningModule):
    """A classifier as a LightningModule: ``predict_step`` gives class probabilities.

    Args:
        model: ``(B, 3, H, W) -> (B, num_classes)`` logits.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The logits of ``images``."""
        return self.model(images)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Class probabilities of a batch ``{"image": (B, 3, H, W), ...}`` (the logits read from
        tensors, Hugging Face outputs and dicts alike)."""
        from lightning_cam.engine.targets import extract_logits

        return extract_logits(self(batch["image"])).softmax(dim=-1)


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``lightning-cam explain --data``: ``lightning-cam explain``'s parser
    (:func:`lightning_cam.cli.explain_args.build_parser`), whose ``--data`` selects this mode."""
    from lightning_cam.cli.explain_args import build_parser as explain_parser

    return explain_parser()


def _single(value: Any, flag: str) -> Any:
    """One value of a flag that takes a list elsewhere (``None`` when not given)."""
    if value is None or isinstance(value, str):
        return value
    values = list(value)
    if len(values) > 1:
        raise CLIError(f"explain --data takes one {flag}, got {len(values)}: {' '.join(values)}")
    return values[0] if values else None


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _build_model(args: argparse.Namespace) -> tuple[nn.Module, Any]:
    """Step 1: the arguments checked; the classifier and its metadata."""
    from lightning_cam import zoo

    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--shard-size",
                             args.shard_size, 1), ("--num-workers", args.num_workers, 0)):
        if value < low:
            raise CLIError(f"{flag} must be >= {low}, got {value}")
    network = _single(getattr(args, "model", None), "--model")
    weight_path = _single(args.weight_path, "--weight-path")
    if args.output_dir is None:
        raise CLIError("explain --data needs --output-dir (the folder of the shards, the manifest "
                       "and the summary)")
    if network is None and (weight_path is None or zoo.checkpoint_backbone(weight_path) is None):
        network = "resnet50"
    return zoo.build_classifier(network, weight_path, device="cpu")


def _build_writer(args: argparse.Namespace, meta: Any) -> Any:
    """Step 2: the :class:`~lightning_cam.predict.CAMWriter` of the run."""
    from lightning_cam.engine.target_spec import parse_target_spec
    from lightning_cam.methods import DEFAULT_METHODS
    from lightning_cam.predict.writer import CAMWriter

    per_class = parse_target_spec(args.target).per_class
    metrics = args.metrics if args.metrics is not None else [
        "average_drop", "increase_in_confidence"
    ] if per_class else []  # binary / regression: the model metrics score a class
    layers = [f"model.{n}" for n in args.layer_name] if args.layer_name else None
    return CAMWriter(
        args.output_dir,
        methods=selected_methods(args, DEFAULT_METHODS),
        layer=layers,
        metrics=metrics,
        target=args.target,
        map_size=args.map_size,
        map_dtype=args.map_dtype,
        shard_size=args.shard_size,
        overlays=args.overlays,
        sanity_samples=args.sanity_samples,
        guided_gradcam=args.guided_gradcam,
        normalize=not args.raw_maps,
        mean=list(meta.mean),
        std=list(meta.std),
    )


def run(args: argparse.Namespace) -> int:
    """Run ``lightning-cam explain --data`` with the arguments of :func:`build_parser` (its
    mode resolved, :func:`lightning_cam.cli.explain_args.resolve_mode`); returns the exit status."""
    from lightning_cam.predict.summary import SUMMARY_MD

    model, meta = _build_model(args)
    size = args.image_size or meta.input_size
    try:
        dataset = ImageFolderDataset(args.data, size, meta.mean, meta.std, meta.categories)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(one_line(err)) from err
    writer = _build_writer(args, meta)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers
    )
    kwargs: dict[str, Any] = {}
    if args.precision:
        kwargs["precision"] = args.precision
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=_devices(str(args.devices)),
        strategy=args.strategy,
        callbacks=[writer],
        logger=False,
        enable_progress_bar=not args.quiet,
        enable_model_summary=False,
        **kwargs,
    )
    trainer.predict(ZooClassifier(model), loader, return_predictions=False)
    if trainer.is_global_zero:  # where the images are, for `lightning-cam report`
        from lightning_cam.predict.audit import record_images

        record_images(args.output_dir, dataset.root)
    if trainer.is_global_zero and not args.quiet:
        out = Path(args.output_dir)
        print((out / SUMMARY_MD).read_text(encoding="utf-8"))
        skipped = (writer.summary or {}).get("status", {})
        bad = sum(n for s, n in skipped.items() if s != "ok")
        done = f"{len(dataset) - bad} images explained"
        done += f", {bad} not (see the manifest's status)" if bad else ""
        print(f"{done}; manifest: {out / 'manifest.parquet'}")
        print(f"Browse it: lightning-cam report {out}")
    return 0


def _run_dataset(args: argparse.Namespace) -> int:
    from lightning_cam.cli.explain_args import resolve_mode

    if args.data is None:
        raise CLIError("the following argument is required: --data")
    resolve_mode(args)
    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightning-cam explain --data`` (``lightning-cam explain`` with
    ``--data`` required)."""
    return run_main(PROG, build_parser(), _run_dataset, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
