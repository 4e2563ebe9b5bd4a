from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_lightning import LightningModule
from torch.utils.data import DataLoader, Dataset

import lightning_cam as lc
from lightning_cam import metrics as M
from lightning_cam._compat import MisconfigurationException
from lightning_cam.methods import normalize_maps, upsample
from lightning_cam.predict import CAMWriter, OutputFolderError, load_maps
from tests.predict.conftest import TinyShapes, loader, tiny_model, trainer

METRICS = ["pointing_game", "energy_pointing_game", "localisation_error", "average_drop",
           "increase_in_confidence"]


def _run(out: Path, model=None, data=None, **kwargs: object) -> CAMWriter:
    kwargs.setdefault("layer", "backbone")
    kwargs.setdefault("metrics", METRICS)
    writer = CAMWriter(str(out), **kwargs)  # type: ignore[arg-type]
    trainer([writer]).predict(model or tiny_model(), data or loader(), return_predictions=False)
    return writer


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "manifest.parquet").sort_values("index").reset_index(drop=True)


def test_maps_rows_and_metrics_equal_an_independent_computation(tmp_path: Path) -> None:
    model = tiny_model()
    writer = _run(tmp_path, model, shard_size=3)
    df = _manifest(tmp_path)
    data = TinyShapes(10)
    batch = {k: torch.stack([data[i][k] for i in range(10)]) for k in ("image", "mask", "box")}
    images = batch["image"]
    ref = lc.explain(model, images, layer="backbone", methods=("gradcam", "gradcam++"),
                     upsample=False)
    assert df["index"].tolist() == list(range(10)) and df["id"].tolist() == [str(i) for i in
                                                                           range(10)]
    assert df["shard"].nunique() == 4  # shards of 3 images
    probs = ref.logits.softmax(1)
    np.testing.assert_array_equal(df["predicted_class"], probs.argmax(1).numpy())
    np.testing.assert_allclose(df["predicted_prob"], probs.max(1).values.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(df["explained_class"], ref.class_ids.numpy())
    np.testing.assert_allclose(df["score"], ref.scores.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(df["label"], [data[i]["label"].item() for i in range(10)])
    tol = 15 * 32 / 224
    summary = json.loads((tmp_path / "summary.json").read_text())
    for method in ("gradcam", "gradcam++"):
        small = ref.cams[method]["backbone"]
        stored = np.stack([load_maps(tmp_path, r.shard, r.row, f"cam/{method}/backbone")
                           for r in df.itertuples()])
        assert stored.shape == (10, 4, 4)
        np.testing.assert_allclose(stored, small.numpy(), atol=1e-3)
        full = normalize_maps(upsample(small, (32, 32)))
        expect = {
            "pointing_game": M.pointing_game(full, batch["mask"], tolerance=tol),
            "energy_pointing_game": M.energy_pointing_game(full, batch["mask"]),
            "average_drop": M.average_drop_increase(model, images, full, ref.class_ids)[0],
            "increase_in_confidence": 100.0 * M.average_drop_increase(
                model, images, full, ref.class_ids)[1].float(),
        }
        for name, value in expect.items():
            col = df[f"{method}/backbone/{name}"].to_numpy()
            np.testing.assert_allclose(col, value.numpy(), atol=1e-4, err_msg=name)
        for name in METRICS:
            got = summary["metrics"][method]["backbone"][name]
            assert got["count"] == 10
            assert got["mean"] == pytest.approx(df[f"{method}/backbone/{name}"].mean(), abs=1e-6)
    assert writer.summary is not None and summary["images"] == 10
    assert "| gradcam | `backbone` |" in (tmp_path / "summary.md").read_text()


def test_input_resolution_uint8_and_guided_outputs(tmp_path: Path) -> None:
    model = tiny_model()
    _run(tmp_path, model, methods=["gradcam"], map_size="input", map_dtype="uint8",
         guided_gradcam=True, metrics=[])
    images = torch.stack([TinyShapes(10)[i]["image"] for i in range(10)])
    ref = lc.explain(model, images, layer="backbone", methods=("gradcam",), guided_gradcam=True)
    with np.load(tmp_path / "shards" / "r00000-a001-s000000.npz") as z:
        cam = z["cam/gradcam/backbone"]
        assert cam.dtype == np.uint8 and cam.shape == (10, 32, 32)
        np.testing.assert_allclose(cam / 255.0, ref.cams["gradcam"]["backbone"].numpy(),
                                   atol=1 / 255 + 1e-4)
        assert z["guided_backprop"].dtype == np.float16
        np.testing.assert_allclose(z["guided_backprop"], ref.guided.numpy(), rtol=1e-2,
                                   atol=1e-3 * float(ref.guided.abs().max()))
        assert z["guided_gradcam/gradcam/backbone"].shape == (10, 3, 32, 32)


class _Failing(Dataset):
    """TinyShapes that raises from index ``fail_at`` on (an interrupted run)."""

    def __init__(self, fail_at: int) -> None:
        self.data, self.fail_at = TinyShapes(10), fail_at

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict[str, object]:
        if i >= self.fail_at:
            raise RuntimeError("interrupted")
        return self.data[i]


def test_a_rerun_skips_what_an_interrupted_run_completed(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="interrupted"):
        _run(tmp_path / "out", shard_size=2, data=DataLoader(_Failing(7), batch_size=2))
    first = sorted(p.name for p in (tmp_path / "out" / "shards").glob("*.parquet"))
    assert first == [f"r00000-a001-s00000{i}.parquet" for i in range(3)]  # 6 images done
    writer = CAMWriter(str(tmp_path / "out"), layer="backbone", metrics=METRICS, shard_size=2)
    explained: list[int] = []
    original = writer._write

    def spy(tr, pm, parts, index, ids, out):  # type: ignore[no-untyped-def]
        explained.extend(index.tolist())
        return original(tr, pm, parts, index, ids, out)

    writer._write = spy  # type: ignore[method-assign]
    trainer([writer]).predict(tiny_model(), loader(batch_size=2), return_predictions=False)
    assert explained == [6, 7, 8, 9]
    _run(tmp_path / "clean")
    resumed, clean = _manifest(tmp_path / "out"), _manifest(tmp_path / "clean")
    cols = [c for c in clean.columns if c not in ("shard", "row")]
    pd.testing.assert_frame_equal(resumed[cols], clean[cols])
    s1 = json.loads((tmp_path / "out" / "summary.json").read_text())["metrics"]
    s2 = json.loads((tmp_path / "clean" / "summary.json").read_text())["metrics"]
    _assert_close(s1, s2)
    for r in resumed.itertuples():
        np.testing.assert_allclose(
            load_maps(tmp_path / "out", r.shard, r.row, "cam/gradcam/backbone"),
            load_maps(tmp_path / "clean", clean.shard[r.Index], clean.row[r.Index],
                      "cam/gradcam/backbone"))


def _assert_close(a: dict, b: dict) -> None:
    for m in a:
        for layer in a[m]:
            for k in a[m][layer]:
                assert a[m][layer][k]["count"] == b[m][layer][k]["count"]
                assert a[m][layer][k]["mean"] == pytest.approx(b[m][layer][k]["mean"], abs=1e-9)


def test_another_configuration_or_model_is_refused(tmp_path: Path) -> None:
    _run(tmp_path, methods=["gradcam"], metrics=[])
    with pytest.raises(OutputFolderError, match=r"another configuration.*methods"):
        _run(tmp_path, methods=["gradcam++"], metrics=[])
    other = tiny_model()
    with torch.no_grad():
        other.head[2].bias += 1.0
    with pytest.raises(OutputFolderError, match="model_digest"):
        _run(tmp_path, other, methods=["gradcam"], metrics=[])
    # the same configuration again: nothing to do, the outputs stay
    _run(tmp_path, methods=["gradcam"], metrics=[])
    assert len(_manifest(tmp_path)) == 10


def test_unwritable_output_and_no_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="Cannot create"):
        _run(tmp_path / "file" / "out")
    import shutil

    from lightning_cam.predict import storage

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(storage.shutil, "disk_usage",
                        lambda _p: usage._replace(free=1000))
    with pytest.raises(OutputFolderError, match="Not enough space"):
        _run(tmp_path / "full", metrics=[])
    assert not list((tmp_path / "full" / "shards").glob("*.npz"))  # refused before writing


def test_logger_overlays_ids_sanity_and_harmless(tmp_path: Path) -> None:
    from pytorch_lightning.loggers import CSVLogger

    model = tiny_model()
    model.train()
    flags = [m.training for m in model.modules()]
    writer = CAMWriter(str(tmp_path / "out"), layer="backbone",
                       metrics=["pointing_game"], overlays=2, overlay_ids=["img007"],
                       sanity_samples=3, sanity_stages=2)
    logger = CSVLogger(str(tmp_path / "logs"), name="x")
    trainer([writer], logger=logger).predict(model, loader(with_id=True),
                                            return_predictions=False)
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())
    pictures = sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir())
    assert pictures == sorted(f"img{i:03d}-{m}-backbone.jpg" for i in (0, 1, 7)
                              for m in ("gradcam", "gradcam++"))
    df = _manifest(tmp_path / "out")
    assert df["id"].tolist() == [f"img{i:03d}" for i in range(10)]
    logged = pd.read_csv(Path(logger.log_dir) / "metrics.csv")
    assert logged["explain/gradcam/backbone/pointing_game"].dropna().item() == pytest.approx(
        df["gradcam/backbone/pointing_game"].mean())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    sanity = summary["sanity"]
    assert sanity["samples"] == 3 and len(sanity["stages"]) == 2
    for sim in ("spearman", "ssim"):
        values = sanity["similarity"]["gradcam"]["backbone"][sim]
        assert len(values) == 2 and all(-1 <= v <= 1 for v in values)
    assert "Sanity check" in (tmp_path / "out" / "summary.md").read_text()


class _Tuples(Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = TinyShapes(6)[i]
        return s["image"], s["label"]


def test_tuple_batches_label_target_and_missing_ground_truth(tmp_path: Path) -> None:
    from lightning_cam.models import ShapesClassifier

    class TupleModel(ShapesClassifier):
        def predict_step(self, batch, batch_idx):  # type: ignore[no-untyped-def, override]
            return self(batch[0]).softmax(-1)

    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="no masks"):
        _run(tmp_path, TupleModel(), data=DataLoader(_Tuples(), batch_size=4), target="label",
             metrics=["pointing_game", "average_drop"])
    df = _manifest(tmp_path)
    assert df["explained_class"].tolist() == df["label"].tolist()
    assert df["gradcam/backbone/pointing_game"].isna().all()
    assert df["gradcam/backbone/average_drop"].notna().all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ["nope"]}, "methods="),
        ({"metrics": ["accuracy"]}, "metrics="),
        ({"map_size": "half"}, "map_size="),
        ({"map_dtype": "float64"}, "map_dtype="),
        ({"shard_size": 0}, "shard_size="),
        ({"target": "best"}, "target="),
        ({"pointing_game_tolerance": -1}, "pointing_game_tolerance="),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(MisconfigurationException, match=match):
        CAMWriter("out", **kwargs)


def test_bad_layer_is_refused_at_setup(tmp_path: Path) -> None:
    with pytest.raises(MisconfigurationException, match="layer="):
        _run(tmp_path, layer="backbone.nope")


def test_both_lightning_namespaces_accept_the_writer(tmp_path: Path) -> None:
    import lightning.pytorch as L
    import pytorch_lightning as pl

    writer = CAMWriter(str(tmp_path))
    assert isinstance(writer, pl.callbacks.BasePredictionWriter)
    assert isinstance(writer, L.callbacks.BasePredictionWriter)
    assert lc.CAMWriter is CAMWriter


def test_several_predict_dataloaders_are_refused(tmp_path: Path) -> None:
    from lightning_cam.models import ShapesClassifier

    class Two(ShapesClassifier):
        def predict_step(self, batch, batch_idx, dataloader_idx=0):  # type: ignore[no-untyped-def, override]
            return super().predict_step(batch, batch_idx)

    with pytest.raises(MisconfigurationException, match="one predict dataloader"):
        _run(tmp_path, Two(), data=[loader(4), loader(4)])


# ----------------------------------------------------------------------------- issue 19


class _DictOutput(LightningModule):
    """A module returning ``{"logits": ...}`` (HF-style), as many real modules do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.net(x)}

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self(batch["image"])["logits"]


def test_sanity_check_on_a_dict_output_module(tmp_path: Path) -> None:
    _run(tmp_path / "out", model=_DictOutput(), layer="net.backbone", metrics=["average_drop"],
         sanity_samples=2, sanity_stages=2)
    assert len(_manifest(tmp_path / "out")) == 10
    sanity = json.loads((tmp_path / "out" / "summary.json").read_text())["sanity"]
    assert sanity["samples"] == 2


def test_a_failing_sanity_check_still_writes_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_cam.predict import writer as W

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(W, "randomisation_test", broken)
    with pytest.raises(RuntimeError, match="sanity check failed.*boom.*manifest"):
        _run(tmp_path / "out", metrics=["pointing_game"], sanity_samples=2, sanity_stages=2)
    assert len(_manifest(tmp_path / "out")) == 10
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "boom" in summary["sanity"]["error"]


def test_resume_with_the_default_layer_after_the_last_shard(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out, layer=None, metrics=[], sanity_samples=2, sanity_stages=2)
    (out / "manifest.parquet").unlink()  # killed after the last shard, before the manifest
    (out / "summary.json").unlink()
    writer = _run(out, layer=None, metrics=[], sanity_samples=2, sanity_stages=2)
    assert writer.summary is not None and writer.summary["layers"] == ["backbone"]
    assert len(_manifest(out)) == 10


class _WithNaN(Dataset):
    """TinyShapes whose image ``bad`` is NaN."""

    def __init__(self, bad: int = 1) -> None:
        self.data, self.bad = TinyShapes(6, with_id=True), bad

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict[str, object]:
        s = dict(self.data[i])
        if i == self.bad:
            s["image"] = torch.full_like(s["image"], float("nan"))  # type: ignore[arg-type]
        return s


def test_non_finite_samples_are_nan_marked_and_left_out_of_the_means(tmp_path: Path) -> None:
    out = tmp_path / "out"
    writer = _run(out, data=DataLoader(_WithNaN(1), batch_size=3), metrics=METRICS,
                  overlays=6, map_size="input")
    df = _manifest(out)
    assert df["nonfinite"].tolist() == [i == 1 for i in range(6)]
    assert df["status"].tolist() == ["ok"] * 6
    bad = df.iloc[1]
    assert pd.isna(bad["predicted_class"]) and pd.isna(bad["predicted_prob"])
    assert np.isnan(bad["score"]) and np.isnan(bad["explained_class"])
    assert all(np.isnan(bad[f"gradcam/backbone/{k}"]) for k in METRICS)
    assert np.isnan(load_maps(out, bad["shard"], bad["row"], "cam/gradcam/backbone")).all()
    good = df.drop(index=1)
    assert not np.isnan(load_maps(out, good.shard.iloc[0], good.row.iloc[0],
                                  "cam/gradcam/backbone")).any()
    assert writer.summary is not None
    cell = writer.summary["metrics"]["gradcam"]["backbone"]["average_drop"]
    assert cell["count"] == 5
    assert cell["mean"] == pytest.approx(good["gradcam/backbone/average_drop"].mean())
    assert writer.summary["status"] == {"ok": 5, "nonfinite": 1}
    drawn = {p.name.split("-")[0] for p in (out / "overlays").iterdir()}
    assert drawn == {f"img{i:03d}" for i in range(6) if i != 1}
    # a shard whose only image is non-finite (null classes) joins the others in the manifest
    _run(tmp_path / "first", data=DataLoader(_WithNaN(0), batch_size=2), shard_size=1,
         metrics=["average_drop"])
    assert _manifest(tmp_path / "first")["nonfinite"].tolist() == [i == 0 for i in range(6)]


class _Named(Dataset):
    def __init__(self, ids: list[str]) -> None:
        self.data, self.names = TinyShapes(len(ids)), ids

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, object]:
        return {**self.data[i], "id": self.names[i]}


def test_overlay_names_are_unique_for_non_ascii_ids(tmp_path: Path) -> None:
    ids = ["猫.png", "犬.png", "a/b.png", "a_b.png"]
    _run(tmp_path / "out", data=DataLoader(_Named(ids), batch_size=4), metrics=[],
         methods=["gradcam"], overlay_ids=ids)
    names = sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir())
    assert len(names) == 4
    assert "猫.png-gradcam-backbone.jpg" in names and "犬.png-gradcam-backbone.jpg" in names


class _Shifted(Dataset):
    """TinyShapes with other ids or other images (another dataset of the same length)."""

    def __init__(self, ids: bool, seed_images: bool) -> None:
        self.data, self.ids, self.other = TinyShapes(10, with_id=True), ids, seed_images

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict[str, object]:
        s = dict(self.data[(i + 1) % 10] if self.other else self.data[i])
        s["id"] = f"other{i:03d}" if self.ids else f"img{i:03d}"
        return s


@pytest.mark.parametrize(("ids", "images", "match"), [
    (True, False, "id 'img000' then, 'other000' now"),
    (False, True, "id 'img000', other input content"),
])
def test_another_dataset_of_the_same_length_is_refused(tmp_path: Path, ids: bool, images: bool,
                                                       match: str) -> None:
    out = tmp_path / "out"
    _run(out, data=loader(with_id=True), metrics=["pointing_game"])
    with pytest.raises(OutputFolderError, match=match):
        _run(out, data=DataLoader(_Shifted(ids, images), batch_size=4), metrics=["pointing_game"])
    small = DataLoader([{**TinyShapes(10, with_id=True)[i], "image": torch.zeros(3, 16, 16)}
                        for i in range(10)], batch_size=4)
    with pytest.raises(OutputFolderError, match="input 3x32x32 then, 3x16x16 now"):
        _run(out, data=small, metrics=["pointing_game"])
    _run(out, data=loader(with_id=True), metrics=["pointing_game"])  # the same data: resumes


@pytest.mark.parametrize(("map_size", "map_dtype"), [("layer", "float16"), ("input", "uint8")])
def test_raw_maps_are_stored_with_their_scale(tmp_path: Path, map_size: str,
                                              map_dtype: str) -> None:
    model = tiny_model()
    out = tmp_path / "raw"
    _run(out, model, normalize=False, metrics=["pointing_game"], map_size=map_size,
         map_dtype=map_dtype)
    df = _manifest(out)
    data = TinyShapes(10)
    images = torch.stack([data[i]["image"] for i in range(10)])
    raw = lc.explain(model, images, layer="backbone", methods=("gradcam", "gradcam++"),
                     upsample=False, normalize=False).cams["gradcam"]["backbone"]
    if map_size == "input":
        raw = upsample(raw, tuple(images.shape[2:]))
    atol = 2e-3 if map_dtype == "float16" else 1 / 255
    for i in (0, 7):
        r = df.iloc[i]
        got = load_maps(out, r["shard"], int(r["row"]), "cam/gradcam/backbone")
        scale = float(raw[i].max())
        assert scale > 0
        np.testing.assert_allclose(got, raw[i].numpy(), rtol=0, atol=atol * scale)
        unit = load_maps(out, r["shard"], int(r["row"]), "cam/gradcam/backbone", raw=False)
        np.testing.assert_allclose(unit, normalize_maps(raw[i : i + 1])[0].numpy(), atol=atol)
    # the metrics are those of the [0, 1] maps, as with normalize=True
    same = _run(tmp_path / "unit", model, metrics=["pointing_game"], map_size=map_size,
                map_dtype=map_dtype)
    assert same.summary is not None
    np.testing.assert_allclose(df["gradcam/backbone/pointing_game"],
                               _manifest(tmp_path / "unit")["gradcam/backbone/pointing_game"])
    assert '"normalize": false' in (out / "run.json").read_text()
    # a rerun asking for [0, 1] maps into the raw folder is refused, naming the option
    with pytest.raises(Exception, match="normalize"):
        _run(out, model, metrics=["pointing_game"], map_size=map_size, map_dtype=map_dtype)
    with pytest.raises(MisconfigurationException, match="normalize"):
        CAMWriter(str(out), normalize="no")  # type: ignore[arg-type]
