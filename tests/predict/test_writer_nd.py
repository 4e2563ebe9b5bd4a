"""CAMWriter on volumes and signals: maps stored with the input's spatial rank, the pointing
game per input equal to a brute-force computation, pictures chosen from the rank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import lightning_cam as lc
from lightning_cam.data import Shapes3DDataModule, SignalsDataModule
from lightning_cam.metrics import pointing_tolerance
from lightning_cam.models import NDClassifier
from lightning_cam.predict import load_maps


def _predict(module: torch.nn.Module, dm: object, out: Path, **kw: object) -> object:
    from pytorch_lightning import Trainer

    writer = lc.CAMWriter(str(out), layer="backbone", methods=["gradcam"],
                          metrics=["pointing_game"], overlays=2, **kw)  # fmt: skip
    trainer = Trainer(accelerator="cpu", callbacks=[writer], logger=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.predict(module, dm, return_predictions=False)
    import pandas as pd

    return pd.read_parquet(out / "manifest.parquet").sort_values("index")


def _brute_force_hits(maps: torch.Tensor, masks: torch.Tensor, tol: float) -> list[float]:
    """Pointing game by hand: the map's maximum within ``tol`` (Euclidean, voxels) of the
    mask."""
    hits = []
    for cam, mask in zip(maps, masks, strict=True):
        peak = np.array(np.unravel_index(int(cam.argmax()), cam.shape), float)
        where = np.argwhere(mask.numpy())
        hits.append(float(np.sqrt(((where - peak) ** 2).sum(1)).min() <= tol))
    return hits


@pytest.mark.parametrize("kind", ["volume", "signal"])
def test_writer_stores_nd_maps_and_scores_each_input(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    if kind == "volume":
        dm = Shapes3DDataModule(num_train=4, num_val=4, num_test=4, batch_size=4, volume_size=16)
        module, layer_shape, spatial = NDClassifier(3, widths=(4, 8)), (8, 8, 8), (16, 16, 16)
        pictures = ("slices", "montage")
    else:
        dm = SignalsDataModule(num_train=4, num_val=4, num_test=4, batch_size=4, length=64)
        module, layer_shape, spatial = NDClassifier(1, widths=(4, 8)), (32,), (64,)
        pictures = ("signal",)
    module.eval()
    manifest = _predict(module, dm, tmp_path)
    assert list(manifest["map_shape"]) == ["x".join(map(str, layer_shape))] * 4
    dm.setup("predict")
    data = dm.dataset("test")
    x = torch.stack([data[i]["image"] for i in range(4)])
    masks = torch.stack([data[i]["mask"] for i in range(4)])
    full = lc.Explainer(module, ["backbone"], methods=["gradcam"])(x).cams["gradcam"]["backbone"]
    assert tuple(full.shape[1:]) == spatial
    for row in manifest.itertuples():
        stored = load_maps(tmp_path, row.shard, row.row, "cam/gradcam/backbone")
        assert stored.shape == layer_shape
    tol = pointing_tolerance(None, spatial, rank=len(spatial))
    expected = _brute_force_hits(full, masks, tol)
    np.testing.assert_array_equal(manifest["gradcam/backbone/pointing_game"].to_numpy(), expected)
    for i in range(2):
        for picture in pictures:
            assert (tmp_path / "overlays" / f"{i}-gradcam-backbone-{picture}.png").is_file()


def test_writer_writes_video_gifs(tmp_path: Path) -> None:
    from PIL import Image

    class Clips(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(i)
            return {"image": torch.rand(3, 4, 8, 8, generator=g), "label": torch.tensor(i)}

    class DM(SignalsDataModule):
        def dataset(self, split: str) -> Clips:  # type: ignore[override]
            return Clips()

    module = NDClassifier(3, in_channels=3, num_classes=2, widths=(4, 8)).eval()
    manifest = _predict(module, DM(batch_size=2), tmp_path, third_axis="time")
    assert len(manifest) == 2
    gif = Image.open(tmp_path / "overlays" / "0-gradcam-backbone-frames.gif")
    assert gif.n_frames == 4 and gif.size == (8, 8)
    assert (tmp_path / "overlays" / "0-gradcam-backbone-strip.png").is_file()


@pytest.mark.parametrize("kind", ["volume", "signal", "video"])
def test_writer_draws_guided_pictures_of_nd_inputs(kind: str, tmp_path: Path) -> None:
    from PIL import Image

    from lightning_cam.tools import viz_nd

    torch.manual_seed(0)
    extra: dict[str, object] = {}
    if kind == "volume":
        dm: object = Shapes3DDataModule(num_train=4, num_val=4, num_test=4, batch_size=4,
                                        volume_size=16)  # fmt: skip
        module, name = NDClassifier(3, widths=(4, 8)), "slices"
    elif kind == "signal":
        dm = SignalsDataModule(num_train=4, num_val=4, num_test=4, batch_size=4, length=64)
        module, name = NDClassifier(1, widths=(4, 8)), "signal"
    else:
        dm = Shapes3DDataModule(num_train=4, num_val=4, num_test=4, batch_size=4,
                                volume_size=16)  # fmt: skip
        module, name, extra = NDClassifier(3, widths=(4, 8)), "strip", {"third_axis": "time"}
    module.eval()
    _predict(module, dm, tmp_path, guided_gradcam=True, **extra)
    dm.setup("predict")  # type: ignore[attr-defined]
    data = dm.dataset("test")  # type: ignore[attr-defined]
    x = torch.stack([data[i]["image"] for i in range(2)])
    ref = lc.explain(module, x, "backbone", methods=["gradcam"], guided_gradcam=True)
    assert ref.guided is not None
    for i in range(2):
        cam = ref.cam("gradcam")[i]
        for what, grad in (("guided_backprop", ref.guided[i]),
                           ("guided_gradcam", ref.guided_cams["gradcam"]["backbone"][i])):
            if kind == "volume":  # through the map's peak, as -slices.png
                want = viz_nd.guided_slices(grad, index=viz_nd.peak_index(cam))
            elif kind == "signal":
                want = viz_nd.guided_signal(x[i], grad)
            else:
                want = viz_nd.guided_strip(grad)
            path = tmp_path / "overlays" / f"{i}-gradcam-backbone-{what}-{name}.png"
            got = np.asarray(Image.open(path).convert("RGB"))
            assert got.shape == want.shape
            assert np.abs(got.astype(int) - want.astype(int)).mean() < 0.5, (kind, what)
