"""Image sinks: where the CAM callbacks' pictures and scalars go, one class per kind of logger.

Each logger of the trainer gets the first sink class in :data:`SINKS` that accepts it; a logger
no sink accepts (``CSVLogger``, ...) gets the scalars only. When no logger took the pictures,
they go to a :class:`PNGFolderSink` in ``{log_dir}/cam_images`` (the callback says so once).
Supporting another logger is one class appended to :data:`SINKS`, nothing else::

    class MyLoggerSink(ImageSink):
        @classmethod
        def accepts(cls, logger): return isinstance(logger, MyLogger)
        def log_images(self, pictures, step):
            for tag, picture in pictures.items():
                self.logger.experiment.save(tag, picture, step)

Pictures are ``uint8`` ``(H, W, 3)`` RGB arrays keyed by tag (``{method}/{layer}/{kind}``);
videos (the ``*_video`` tags of video inputs) are ``uint8`` ``(T, H, W, 3)`` frames, which
:meth:`ImageSink.log` passes to :meth:`ImageSink.log_videos`: TensorBoard gets an animated GIF
image summary (what ``SummaryWriter.add_video`` writes, without its moviepy dependency), W&B a
``wandb.Video`` of the same GIF (W&B's own encoding of raw frames needs moviepy), MLflow a GIF
artifact, the PNG fallback a ``.gif`` file; a logger with no video support gets none (each
video's ``*_strip`` picture shows its frames). Scalars are floats keyed by tag; all at
``step=trainer.global_step``. The sinks for W&B and
MLflow import nothing of ``wandb`` / ``mlflow`` themselves: the loggers bring their packages.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from lightning_cam.tools import viz


def is_lightning_logger(logger: Any, name: str) -> bool:
    """Whether ``logger`` is (a subclass of) Lightning's logger class ``name``, from either
    namespace (``pytorch_lightning.loggers`` or ``lightning.pytorch.loggers``), without
    importing the logger's package."""
    return any(
        cls.__name__ == name and cls.__module__.split(".")[0] in ("pytorch_lightning", "lightning")
        for cls in type(logger).__mro__
    )


class ImageSink:
    """One logger's destination for pictures and scalars.

    Subclasses say which loggers they take (:meth:`accepts`) and how pictures are written
    (:meth:`log_images`); scalars default to ``logger.log_metrics``.

    Attributes:
        takes_images: Whether this sink stores pictures (else they go to the PNG fallback).
    """

    takes_images: ClassVar[bool] = True

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        """Whether this sink serves ``logger``."""
        raise NotImplementedError

    def log_images(self, pictures: Mapping[str, np.ndarray], step: int) -> None:
        """Write every picture under its tag at ``step``."""
        raise NotImplementedError

    def log_videos(self, videos: Mapping[str, np.ndarray], step: int) -> None:
        """Write every video ``(T, H, W, 3)`` under its tag at ``step`` (by default none:
        loggers without a video panel show the ``*_strip`` pictures)."""
        return None

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """Write every scalar under its tag at ``step``."""
        if scalars:
            self.logger.log_metrics(dict(scalars), step=step)

    def log(
        self, pictures: Mapping[str, np.ndarray], scalars: Mapping[str, float], step: int
    ) -> None:
        """Write one run's pictures and videos (when :attr:`takes_images`) and scalars."""
        if pictures and self.takes_images:
            images, videos = split_videos(pictures)
            if images:
                self.log_images(images, step)
            if videos:
                self.log_videos(videos, step)
        self.log_scalars(scalars, step)


def split_videos(
    pictures: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(images, videos)`` of ``pictures``: ``(H, W, 3)`` arrays and ``(T, H, W, 3)`` ones."""
    images = {k: v for k, v in pictures.items() if v.ndim == 3}
    videos = {k: v for k, v in pictures.items() if v.ndim == 4}
    return images, videos


#: Frames a second of the logged videos.
VIDEO_FPS = 4.0


class DisabledSink(ImageSink):
    """Lightning's ``DummyLogger`` (``fast_dev_run``, loggers switched off for a run): nothing
    is written, and nothing goes to the PNG fallback either."""

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        return is_lightning_logger(logger, "DummyLogger")

    def log_images(self, pictures: Mapping[str, np.ndarray], step: int) -> None:
        return None

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        return None


def _tensorboard_png(tag: str, picture: np.ndarray) -> Any:
    """A TensorBoard image summary of ``picture``, PNG-encoded with OpenCV at a fast level (the
    same pixels, several times faster than the PIL encoder ``add_image`` uses)."""
    import cv2
    from tensorboard.compat.proto.summary_pb2 import Summary

    ok, png = cv2.imencode(
        ".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]
    )
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB array
        return None
    height, width = picture.shape[:2]
    image = Summary.Image(
        height=height, width=width, colorspace=3, encoded_image_string=png.tobytes()
    )
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def _is_summary_writer(obj: Any) -> bool:
    return any(
        c.__name__ == "SummaryWriter"
        and c.__module__.startswith(("torch.utils.tensorboard", "tensorboardX"))
        for c in type(obj).__mro__
    )


def _tensorboard_gif(tag: str, frames: np.ndarray) -> Any:
    """A TensorBoard image summary holding an animated GIF of ``frames`` (the summary
    ``SummaryWriter.add_video`` writes; TensorBoard's image panel plays it)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    from lightning_cam.tools import viz_nd

    t, height, width = frames.shape[:3]
    image = Summary.Image(
        height=height, width=width, colorspace=3,
        encoded_image_string=viz_nd.encode_gif(frames, VIDEO_FPS),
    )  # fmt: skip
    return Summary(value=[Summary.Value(tag=tag, image=image)])


class TensorBoardSink(ImageSink):
    """``TensorBoardLogger``: image summaries in the run's event file (videos as animated GIF
    image summaries, as ``add_video`` writes them)."""

    def log_videos(self, videos: Mapping[str, np.ndarray], step: int) -> None:
        experiment = self.logger.experiment
        get_writer = getattr(experiment, "_get_file_writer", None)
        for tag, frames in videos.items():
            if callable(get_writer):
                get_writer().add_summary(_tensorboard_gif(tag, frames), step)
            else:  # another SummaryWriter: its own add_video (needs moviepy)
                from lightning_cam.tools import viz_nd

                experiment.add_video(
                    tag, viz_nd.video_tensor(frames), global_step=step, fps=VIDEO_FPS
                )

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        return is_lightning_logger(logger, "TensorBoardLogger")

    def log_images(self, pictures: Mapping[str, np.ndarray], step: int) -> None:
        experiment = self.logger.experiment
        get_writer = getattr(experiment, "_get_file_writer", None)
        for tag, picture in pictures.items():
            summary = None
            if callable(get_writer):
                try:
                    summary = _tensorboard_png(tag, picture)
                except ImportError:  # pragma: no cover - tensorboard's protos come with it
                    summary = None
            if summary is not None and callable(get_writer):
                get_writer().add_summary(summary, step)
            else:
                experiment.add_image(
                    tag, viz.to_chw_tensor(picture), global_step=step, dataformats="CHW"
                )


class WandbSink(ImageSink):
    """``WandbLogger``: one ``wandb.Image`` per tag (files under the run directory's
    ``files/media/images``), a run's pictures and scalars in one history row with
    ``trainer/global_step``."""

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        return is_lightning_logger(logger, "WandbLogger")

    def log_images(self, pictures: Mapping[str, np.ndarray], step: int) -> None:
        self.log(pictures, {}, step)

    def log(
        self, pictures: Mapping[str, np.ndarray], scalars: Mapping[str, float], step: int
    ) -> None:
        import wandb  # the logger's own package

        from lightning_cam.tools import viz_nd

        images, videos = split_videos(pictures)
        row: dict[str, Any] = {tag: wandb.Image(pic) for tag, pic in images.items()}
        for tag, frames in videos.items():  # our GIF bytes: raw frames would need moviepy
            row[tag] = wandb.Video(io.BytesIO(viz_nd.encode_gif(frames, VIDEO_FPS)), format="gif")
        row.update(scalars)
        if row:
            self.logger.log_metrics(row, step=step)


_MLFLOW_KEY = re.compile(r"[^A-Za-z0-9_\-./ ]")


def mlflow_key(tag: str) -> str:
    """``tag`` in the characters MLflow allows in image keys and metric names: ``+`` becomes
    ``p`` (``gradcam++`` -> ``gradcampp``), anything else outside them ``_``. (Lightning's
    ``MLFlowLogger`` would drop the ``+`` and merge Grad-CAM++'s scalars into Grad-CAM's.)"""
    return _MLFLOW_KEY.sub(lambda m: "p" if m.group() == "+" else "_", tag)


class MLflowSink(ImageSink):
    """``MLFlowLogger``: ``MlflowClient.log_image(run_id, picture, key=tag, step=step)`` (run
    artifacts under ``images/``), scalars with MLflow-safe names (see :func:`mlflow_key`)."""

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        return is_lightning_logger(logger, "MLFlowLogger")

    def log_images(self, pictures: Mapping[str, np.ndarray], step: int) -> None:
        client, run_id = self.logger.experiment, self.logger.run_id
        for tag, picture in pictures.items():
            client.log_image(run_id, picture, key=mlflow_key(tag), step=step)

    def log_videos(self, videos: Mapping[str, np.ndarray], step: int) -> None:
        import tempfile

        from lightning_cam.tools import viz_nd

        client, run_id = self.logger.experiment, self.logger.run_id
        with tempfile.TemporaryDirectory() as folder:
            for tag, frames in videos.items():
                key = mlflow_key(tag)
                path = os.path.join(folder, f"step_{step:07d}.gif")
                viz_nd.save_gif(path, frames, VIDEO_FPS)
                client.log_artifact(run_id, path, artifact_path=f"videos/{key}")

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        super().log_scalars({mlflow_key(k): v for k, v in scalars.items()}, step)


class LogImageSink(ImageSink):
    """Any other logger with a ``log_image(key=, images=, step=)`` method (W&B's signature)."""

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        return callable(getattr(type(logger), "log_image", None))

    def log_images(self, pictures: Mapping[str, np.ndarray], step: int) -> None:
        for tag, picture in pictures.items():
            self.logger.log_image(key=tag, images=[picture], step=step)


class SummaryWriterSink(TensorBoardSink):
    """Any other logger whose ``experiment`` is torch's or tensorboardX's ``SummaryWriter``
    (custom TensorBoard loggers)."""

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        if is_lightning_logger(logger, "CSVLogger"):
            return False
        return _is_summary_writer(getattr(logger, "experiment", None))


class ScalarSink(ImageSink):
    """A logger that takes no pictures (``CSVLogger``, ...): scalars only."""

    takes_images = False

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        return True

    def log_images(self, pictures: Mapping[str, np.ndarray], step: int) -> None:
        return None


class PNGFolderSink(ImageSink):
    """PNG files ``{root}/{tag}/step_{step:07d}.png`` (the fallback when no logger takes
    pictures)."""

    def __init__(self, root: str) -> None:
        super().__init__(None)
        self.root = root

    @classmethod
    def accepts(cls, logger: Any) -> bool:
        return False

    def log_images(self, pictures: Mapping[str, np.ndarray], step: int) -> None:
        for tag, picture in pictures.items():
            path = os.path.join(self.root, *tag.split("/"), f"step_{step:07d}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            viz.save_image(path, picture)

    def log_videos(self, videos: Mapping[str, np.ndarray], step: int) -> None:
        from lightning_cam.tools import viz_nd

        for tag, frames in videos.items():
            path = os.path.join(self.root, *tag.split("/"), f"step_{step:07d}.gif")
            viz_nd.save_gif(path, frames, VIDEO_FPS)

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        return None


#: Sink classes, tried in order for each logger; the first that accepts it serves it.
SINKS: list[type[ImageSink]] = [
    DisabledSink,
    TensorBoardSink,
    WandbSink,
    MLflowSink,
    LogImageSink,
    SummaryWriterSink,
]


def sink_for(logger: Any) -> ImageSink:
    """The sink serving ``logger``: the first of :data:`SINKS` that accepts it, else scalars
    only (:class:`ScalarSink`)."""
    for cls in SINKS:
        if cls.accepts(logger):
            return cls(logger)
    return ScalarSink(logger)


#: Folder of the PNG fallback under the log dir. Not ``lightning_cam``: from a checkout's root
#: (``default_root_dir="."``) that is the package's own folder.
PNG_FOLDER = "cam_images"


def png_root(trainer: Any) -> str:
    """The PNG fallback's folder: ``{trainer.log_dir or default_root_dir}/cam_images``
    (:data:`PNG_FOLDER`)."""
    base = getattr(trainer, "log_dir", None) or getattr(trainer, "default_root_dir", None)
    return os.path.join(str(base or "."), PNG_FOLDER)
