"""The callbacks on signals (B, C, L), volumes (B, C, D, H, W) and videos (B, C, T, H, W):
pictures chosen from the rank, videos through the sinks (TensorBoard's event file read back,
W&B offline files, GIF files), refusals at the first batch, and the embedded 1-D and 3-D
configs run end to end through ``lightning-cam fit``."""

from __future__ import annotations

import glob
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import lightning_cam as lc
from lightning_cam._compat import MisconfigurationException
from lightning_cam.callbacks import render, render_nd, sinks
from lightning_cam.callbacks.options import CAMOptions
from lightning_cam.engine import Explanation
from lightning_cam.tools import viz_nd
from tests.callbacks.helpers import image_events, make_trainer, scalar_events, tb_dir
from tests.optional import require

CONFIGS = Path(lc.__file__).resolve().parent / "configs"


def _probes(spatial: tuple[int, ...], channels: int = 1, n: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(n, *spatial, dtype=torch.bool)
    mask[(slice(None), *[slice(s // 4, s // 2) for s in spatial])] = True
    return {
        "image": torch.rand(n, channels, *spatial, generator=g),
        "label": torch.arange(n) % 3,
        "mask": mask,
    }


def _result(probes: dict[str, torch.Tensor]) -> Explanation:
    cams = probes["mask"].float() * 0.5
    cams.view(cams.shape[0], -1)[:, 0] = 1.0  # a unique peak per map: the first voxel
    logits = torch.eye(3)[: cams.shape[0]] * 2
    return Explanation(
        cams={"gradcam": {"backbone": cams}}, logits=logits, class_ids=logits.argmax(1)
    )


def _options(**kw: Any) -> CAMOptions:
    return CAMOptions.from_arguments(layer="backbone", num_samples=2, tile_size=32, **kw)


def test_pictures_follow_the_rank() -> None:
    cases = {
        ((64,), "depth"): {"overlay", "heatmap"},
        ((8, 8, 8), "depth"): {"overlay_slices", "overlay_montage", "heatmap_slices",
                               "heatmap_montage"},
        ((5, 8, 8), "time"): {"overlay_strip", "overlay_video", "heatmap_strip",
                              "heatmap_video"},
    }  # fmt: skip
    for (spatial, axis), kinds in cases.items():
        probes = _probes(spatial, channels=3 if axis == "time" else 1)
        opts = _options(log_heatmap=True, log_guided_gradcam=False, third_axis=axis)
        pictures = render_nd.render_nd(opts, probes, _result(probes), ["backbone"], None)
        assert set(pictures) == {f"gradcam/backbone/{k}" for k in kinds}
        for tag, pic in pictures.items():
            assert pic.dtype == np.uint8 and pic.shape[-1] == 3
            assert pic.ndim == (4 if tag.endswith("_video") else 3)
    video = pictures["gradcam/backbone/overlay_video"]
    assert video.shape[0] == 5  # one frame per time step, the probes side by side


def test_volume_slices_picture_is_the_slices_through_each_peak() -> None:
    probes = _probes((8, 8, 8))
    result = _result(probes)
    opts = _options(log_heatmap=True, log_overlay=False, log_guided_gradcam=False)
    pic = render_nd.render_nd(opts, probes, result, ["backbone"], None)[
        "gradcam/backbone/heatmap_slices"
    ]
    cam = result.cams["gradcam"]["backbone"][0]
    assert viz_nd.peak_index(cam) == (0, 0, 0)
    expected = viz_nd.volume_slices(probes["image"][0], cam, alpha=1.0, size=32)
    np.testing.assert_array_equal(pic[18 : 18 + expected.shape[0], : expected.shape[1]], expected)


def test_signal_picture_holds_the_mask_bar() -> None:
    probes = _probes((64,))
    opts = _options(log_guided_gradcam=False)
    pic = render_nd.render_nd(opts, probes, _result(probes), ["backbone"], ["a", "b", "c"])[
        "gradcam/backbone/overlay"
    ]
    assert pic.shape[1] == 384 and pic.shape[0] == 2 * 144
    assert (np.all(pic == 0, axis=-1).sum(1) > 0.1 * pic.shape[1]).any()  # the truth bar


def test_third_axis_is_checked() -> None:
    with pytest.raises(MisconfigurationException, match="third_axis"):
        lc.GradCAMCallback(third_axis="frames")  # type: ignore[arg-type]
    with pytest.raises(MisconfigurationException, match="third_axis"):
        lc.CAMWriter("out", third_axis="frames")  # type: ignore[arg-type]


def _gif_frames(data: bytes) -> int:
    from PIL import Image

    return int(Image.open(io.BytesIO(data)).n_frames)


def test_tensorboard_sink_writes_videos_as_gif_summaries(tmp_path: Any) -> None:
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    frames = np.zeros((6, 16, 20, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(6)[:, None, None] * 40
    strip = viz_nd.video_strip(frames, size=16)
    sinks.sink_for(logger).log({"m/l/overlay_video": frames, "m/l/overlay_strip": strip}, {}, 7)
    logger.experiment.flush()
    events = image_events(tb_dir(tmp_path))
    (video,) = events["m/l/overlay_video"]
    assert video.encoded_image_string[:6] == b"GIF89a" and video.step == 7
    assert (video.width, video.height) == (20, 16)
    assert _gif_frames(video.encoded_image_string) == 6
    (still,) = events["m/l/overlay_strip"]
    assert still.encoded_image_string[:4] == b"\x89PNG"


def test_png_fallback_writes_gif_files(tmp_path: Any) -> None:
    frames = (np.arange(3, dtype=np.uint8)[:, None, None, None] * 80).repeat(8, 1).repeat(8, 2)
    frames = frames.repeat(3, 3)  # three distinct frames (Pillow merges identical ones)
    sinks.PNGFolderSink(str(tmp_path)).log({"m/l/overlay_video": frames}, {}, 2)
    path = tmp_path / "m" / "l" / "overlay_video" / "step_0000002.gif"
    assert _gif_frames(path.read_bytes()) == 3


def test_wandb_sink_logs_videos(tmp_path: Any, monkeypatch: Any) -> None:
    require("wandb", "pip install 'lightning-cam[integrations]'")
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="cams")
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    frames[np.arange(4), np.arange(4)] = 255  # distinct frames
    sinks.sink_for(logger).log({"m/l/overlay_video": frames}, {"m/l/pg": 1.0}, 0)
    logger.experiment.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    gifs = list((run / "files" / "media" / "videos").rglob("*.gif"))
    assert len(gifs) == 1 and _gif_frames(gifs[0].read_bytes()) == 4


class _Volumes(torch.utils.data.Dataset):
    def __init__(self, spatial: tuple[int, ...], n: int = 8) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.rand(n, 1, *spatial, generator=g)
        self.y = torch.arange(n) % 2

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i], "label": self.y[i]}


def _module(spatial_dims: int) -> Any:
    return lc.models.NDClassifier(spatial_dims=spatial_dims, num_classes=2, widths=(4, 8))


@pytest.mark.parametrize("spatial_dims", [1, 3])
def test_guided_pictures_of_signals_and_volumes_are_logged(
    spatial_dims: int, tmp_path: Any
) -> None:
    spatial = (32,) if spatial_dims == 1 else (8, 8, 8)
    data = torch.utils.data.DataLoader(_Volumes(spatial), batch_size=4)
    cb = lc.GradCAMCallback(layer="backbone", num_samples=2, log_guided_backprop=True,
                            log_guided_gradcam=True, log_overlay=False)  # fmt: skip
    trainer = make_trainer(tmp_path, [cb], max_epochs=1, limit_train_batches=1,
                           limit_val_batches=1, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(_module(spatial_dims), data, data)
    images = image_events(tb_dir(tmp_path))
    suffix = "" if spatial_dims == 1 else "_slices"
    tags = {f"gradcam/backbone/{k}{suffix}" for k in ("guided_backprop", "guided_gradcam")}
    assert set(images) == tags
    for tag in tags:
        (event,) = images[tag]
        assert event.encoded_image_string[:4] == b"\x89PNG" and event.height > 100


def test_guided_pictures_are_the_viz_nd_pictures_of_the_gradients() -> None:
    cases = {((64,), "depth"): "", ((8, 8, 8), "depth"): "_slices", ((5, 8, 8), "time"): "_strip"}
    for (spatial, axis), suffix in cases.items():
        probes = _probes(spatial, channels=3 if axis == "time" else 1)
        result = _result(probes)
        g = torch.Generator().manual_seed(2)
        result.guided = torch.randn(probes["image"].shape, generator=g)
        result.guided_cams = {"gradcam": {"backbone": result.guided * 2 - 1}}
        opts = _options(log_overlay=False, log_guided_backprop=True, log_guided_gradcam=True,
                        third_axis=axis)  # fmt: skip
        pictures = render_nd.render_nd(opts, probes, result, ["backbone"], None)
        assert set(pictures) == {f"gradcam/backbone/guided_backprop{suffix}",
                                 f"gradcam/backbone/guided_gradcam{suffix}"}  # fmt: skip
        pic = pictures[f"gradcam/backbone/guided_gradcam{suffix}"]
        grad, cam = result.guided_cams["gradcam"]["backbone"][0], result.cams["gradcam"][
            "backbone"][0]  # fmt: skip
        if suffix == "_slices":  # through the map's peak, as overlay_slices
            want = viz_nd.guided_slices(grad, index=viz_nd.peak_index(cam), size=32)
        elif suffix == "_strip":
            want = viz_nd.guided_strip(grad, size=32)
        else:
            title = render.tile_labels(result, probes["label"], 2, None, False)[0]
            want = viz_nd.guided_signal(probes["image"][0], grad, width=384, height=176,
                                        title=title)  # fmt: skip
            assert pic.shape[0] == 2 * 176
            np.testing.assert_array_equal(pic[:176], want)
            continue
        np.testing.assert_array_equal(pic[18 : 18 + want.shape[0], : want.shape[1]], want)


def test_rgb_statistics_on_grey_volumes_are_refused_before_training(tmp_path: Any) -> None:
    data = torch.utils.data.DataLoader(_Volumes((8, 8, 8)), batch_size=4)
    cb = lc.GradCAMCallback(layer="backbone", mean=[0.485, 0.456, 0.406],
                            std=[0.229, 0.224, 0.225])  # fmt: skip
    trainer = make_trainer(tmp_path, [cb], max_epochs=1, limit_train_batches=1,
                           limit_val_batches=1, num_sanity_val_steps=0)  # fmt: skip
    with pytest.raises(MisconfigurationException, match="mean has 3 values for an input of 1"):
        trainer.fit(_module(3), data, data)
    assert trainer.global_step == 0


def _run_config(name: str, tmp_path: Path, *extra: str) -> str:
    from lightning_cam.cli import main

    main([
        "fit", "--config", str(CONFIGS / name), "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
        "--trainer.default_root_dir", str(tmp_path), *extra,
    ])  # fmt: skip
    events = glob.glob(str(tmp_path / "logs" / "**" / "events.out.tfevents.*"), recursive=True)
    assert events, "no TensorBoard event file written"
    return os.path.dirname(events[0])


def test_signals_config_trains_and_logs_bands_and_pointing_game(tmp_path: Path) -> None:
    log_dir = _run_config("signals.yaml", tmp_path, "--data.num_train", "64", "--data.num_val",
                          "32")  # fmt: skip
    images = image_events(log_dir)
    (event,) = images["gradcam/backbone/overlay"]
    assert event.height == 4 * 144
    assert "gradcam/backbone/pointing_game" in scalar_events(log_dir)


def test_shapes3d_config_trains_and_logs_slices_and_pointing_game(tmp_path: Path) -> None:
    log_dir = _run_config("shapes3d.yaml", tmp_path, "--data.num_train", "32",
                          "--data.num_val", "16", "--data.volume_size", "16")  # fmt: skip
    images = image_events(log_dir)
    assert {"gradcam/backbone/overlay_slices", "gradcam/backbone/overlay_montage"} <= set(images)
    scalars = scalar_events(log_dir)
    (pg,) = scalars["gradcam/backbone/pointing_game"]
    assert 0.0 <= pg.value <= 1.0


def test_video_batches_log_strip_and_video(tmp_path: Any) -> None:
    class Videos(_Volumes):
        def __init__(self) -> None:
            super().__init__((4, 8, 8))
            self.x = self.x.repeat(1, 3, 1, 1, 1)  # (3, T, H, W) RGB clips

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU())
            self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))

    module = _module(3)
    module.backbone = Model().backbone
    module.head = Model().head
    data = torch.utils.data.DataLoader(Videos(), batch_size=4)
    cb = lc.GradCAMCallback(layer="backbone", third_axis="time", num_samples=2, tile_size=32)
    trainer = make_trainer(tmp_path, [cb], max_epochs=1, limit_train_batches=1,
                           limit_val_batches=1, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(module, data, data)
    events = image_events(tb_dir(tmp_path))
    (video,) = events["gradcam/backbone/overlay_video"]
    assert _gif_frames(video.encoded_image_string) == 4
    (strip,) = events["gradcam/backbone/overlay_strip"]
    assert strip.height == 2 * (18 + 32 + 4)  # two probes: caption, frames, padding
