"""Gallery: Grad-CAM of a volume, a video and a signal (docs/nd-pictures.md).

Three small models are trained for a few seconds each on the embedded synthetic data (3-D
shapes volumes, 1-D signals, and clips of a 2-D shape moving across the frame), then each
validation sample is explained and drawn with :mod:`lightning_cam.tools.viz_nd`:

* ``nd_volume_slices.png``: orthogonal slices through the map's peak; ``nd_volume_montage.png``;
* ``nd_video_strip.png`` and ``nd_video.gif``: frames of a clip with its map;
* ``nd_signal_band.png``: the signal over its map, with the ground truth under the band;
* ``nd_volume_guided_gradcam.png`` and ``nd_signal_guided_gradcam.png``: guided Grad-CAM of
  the same volume (slices through the same peak) and signal (the gradient under the signal).

Run: ``python docs/gallery/nd.py out/`` (seeded, CPU, well under a minute).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import lightning_cam as lc
from lightning_cam.data import Shapes3DDataset, ShapesDataset, SignalsDataset
from lightning_cam.models import NDClassifier
from lightning_cam.tools import viz, viz_nd


class MovingShapes(Dataset):
    """Clips ``(3, T, S, S)`` of one shape of :class:`ShapesDataset` sliding to the right over
    a plain noisy background."""

    def __init__(self, n: int, seed: int, frames: int = 8, size: int = 32) -> None:
        self.shapes = ShapesDataset(n, image_size=size, seed=seed, clutter=False)
        self.frames = frames

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.shapes[i]
        g = torch.Generator().manual_seed(i)
        background = 0.4 + 0.2 * torch.rand(3, 1, 1, generator=g)
        background = background + 0.05 * torch.randn(3, *s["mask"].shape, generator=g)
        step = 1 + i % 2
        frames, masks = [], []
        for t in range(self.frames):
            dx = step * (t - self.frames // 2)
            mask = s["mask"].roll(dx, dims=-1)
            frames.append(torch.where(mask, s["image"].roll(dx, dims=-1), background))
            masks.append(mask)
        return {"image": torch.stack(frames, 1), "label": s["label"], "mask": torch.stack(masks)}


def _train(model: NDClassifier, data: Dataset, epochs: int) -> NDClassifier:
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        for batch in DataLoader(data, batch_size=16, shuffle=True):
            loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _explain(model: NDClassifier, sample: dict[str, torch.Tensor]) -> torch.Tensor:
    return lc.Explainer(model, ["backbone"])(sample["image"][None]).cams["gradcam"]["backbone"][0]


def _guided_gradcam(model: NDClassifier, sample: dict[str, torch.Tensor]) -> torch.Tensor:
    out = lc.Explainer(model, ["backbone"], guided_gradcam=True)(sample["image"][None])
    return out.guided_cams["gradcam"]["backbone"][0]


def main(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Train, explain and draw; returns the files written into ``out_dir``."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[pathlib.Path] = []

    def save(name: str, picture: np.ndarray) -> None:
        viz.save_image(out_dir / name, picture)
        written.append(out_dir / name)

    volumes = _train(NDClassifier(3, class_names=list(Shapes3DDataset(1).classes)),
                     Shapes3DDataset(192, seed=1), epochs=2)  # fmt: skip
    vol = Shapes3DDataset(8, seed=99)[2]  # a cross
    cam = _explain(volumes, vol)
    save("nd_volume_slices.png", viz_nd.volume_slices(vol["image"], cam, size=160))
    save("nd_volume_montage.png", viz_nd.volume_montage(vol["image"], cam, num_slices=8, size=96))
    save("nd_volume_guided_gradcam.png", viz_nd.guided_slices(
        _guided_gradcam(volumes, vol), index=viz_nd.peak_index(cam), size=160))  # fmt: skip

    signals = _train(NDClassifier(1, widths=(16, 32, 64)), SignalsDataset(384, seed=1), epochs=3)
    sig = SignalsDataset(8, seed=99)[0]  # a burst
    band = viz_nd.signal_band(sig["image"], _explain(signals, sig), mask=sig["mask"],
                              width=640, height=200, title="Grad-CAM of a 1-D CNN: burst")
    save("nd_signal_band.png", band)
    save("nd_signal_guided_gradcam.png", viz_nd.guided_signal(
        sig["image"], _guided_gradcam(signals, sig), width=640, height=220,
        title="guided Grad-CAM of the same burst"))  # fmt: skip

    clips = _train(NDClassifier(3, in_channels=3, num_classes=4, widths=(8, 16, 32)),
                   MovingShapes(192, seed=1), epochs=3)  # fmt: skip
    clip = MovingShapes(8, seed=99)[3]  # a star
    frames = viz_nd.video_frames(clip["image"], _explain(clips, clip))
    save("nd_video_strip.png", viz_nd.video_strip(frames, num_frames=8, size=96))
    big = np.stack([viz_nd.video_strip(f[None], num_frames=1, size=128, labels=False)
                    for f in frames])  # fmt: skip
    viz_nd.save_gif(out_dir / "nd_video.gif", big, fps=4)
    written.append(out_dir / "nd_video.gif")
    return written


if __name__ == "__main__":
    for path in main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "gallery_out")):
        print(path)
