"""``CAMWriter`` with ``binary`` / ``regression`` target specs: the rows record the spec and the
explained value, the maps are the engine's for the same target; heads a spec cannot serve and
multi-label ``labels`` are refused with the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import lightning_cam as lc
from lightning_cam._compat import MisconfigurationException
from lightning_cam.engine.target_kinds import RegressionTarget
from lightning_cam.engine.targets import BinaryTarget
from lightning_cam.predict import CAMWriter, load_maps
from tests.predict.conftest import TinyShapes, loader, trainer


def _model(k: int) -> torch.nn.Module:
    from lightning_cam.models import ShapesClassifier

    torch.manual_seed(0)
    model = ShapesClassifier(num_classes=2)
    linear = model.head[2]
    model.head[2] = torch.nn.Linear(linear.in_features, k)  # k = 1: a binary head (B, 1)
    return model


def _run(out: Path, model: torch.nn.Module, **kwargs: object) -> pd.DataFrame:
    writer = CAMWriter(str(out), layer="backbone", methods=["gradcam"], metrics=[], **kwargs)
    trainer([writer]).predict(model, loader(6), return_predictions=False)
    df = pd.read_parquet(out / "manifest.parquet")
    return df.sort_values("index").reset_index(drop=True)


def _images(n: int = 6) -> torch.Tensor:
    data = TinyShapes(n)
    return torch.stack([data[i]["image"] for i in range(n)])  # type: ignore[misc]


@pytest.mark.parametrize("spec", ["binary", "binary:negative"])
def test_binary_rows_record_spec_and_probability(tmp_path: Path, spec: str) -> None:
    model = _model(1)
    df = _run(tmp_path, model, target=spec)
    x = _images()
    z = model.eval()(x).detach()[:, 0]
    assert df["target"].tolist() == [spec] * 6
    np.testing.assert_allclose(df["target_value"], torch.sigmoid(z).numpy(), rtol=1e-5)
    np.testing.assert_allclose(df["score"], (-z if spec != "binary" else z).numpy(), rtol=1e-5)
    assert df["explained_class"].isna().all() and df["predicted_class"].isna().all()
    ref = lc.explain(model, x, layer="backbone", target=BinaryTarget(spec != "binary"),
                     upsample=False).cams["gradcam"]["backbone"]
    stored = np.stack([load_maps(tmp_path, r.shard, r.row, "cam/gradcam/backbone")
                       for r in df.itertuples()])
    np.testing.assert_allclose(stored, lc.methods.normalize_maps(ref).numpy(), atol=2e-3)


def test_regression_rows_record_spec_and_output_value(tmp_path: Path) -> None:
    model = _model(2)
    df = _run(tmp_path, model, target="regression:1:decrease")
    x = _images()
    y = model.eval()(x).detach()
    assert df["target"].tolist() == ["regression:1:decrease"] * 6
    np.testing.assert_allclose(df["target_value"], y[:, 1].numpy(), rtol=1e-5)
    np.testing.assert_allclose(df["score"], -y[:, 1].numpy(), rtol=1e-5)
    ref = lc.explain(model, x, layer="backbone", target=RegressionTarget(1, "decrease"),
                     upsample=False).cams["gradcam"]["backbone"]
    stored = np.stack([load_maps(tmp_path, r.shard, r.row, "cam/gradcam/backbone")
                       for r in df.itertuples()])
    np.testing.assert_allclose(stored, lc.methods.normalize_maps(ref).numpy(), atol=2e-3)


def test_default_rows_record_pred(tmp_path: Path) -> None:
    df = _run(tmp_path, _model(4))
    assert df["target"].tolist() == ["pred"] * 6 and df["target_value"].isna().all()
    assert df["explained_class"].notna().all()


@pytest.mark.parametrize(
    ("k", "spec", "match"),
    [
        (4, "binary", r"single-logit head \(B, 1\), but the output has 4 values"),
        (2, "regression:2", r"index 2 is out of range .* 0..1"),
        (1, 1, r"class id, but the output is a single-logit .* target='binary'"),
    ],
)
def test_heads_a_spec_cannot_serve_are_refused(tmp_path: Path, k: int, spec: object,
                                               match: str) -> None:
    with pytest.raises(MisconfigurationException, match=match):
        _run(tmp_path, _model(k), target=spec)
    assert not (tmp_path / "manifest.parquet").exists()


def test_refusals_at_construction(tmp_path: Path) -> None:
    with pytest.raises(MisconfigurationException, match=r"explain_multilabel"):
        CAMWriter(str(tmp_path), target="labels")
    with pytest.raises(MisconfigurationException, match=r"CAMCallback\(target='labels'\)"):
        CAMWriter(str(tmp_path), target="labels")
    with pytest.raises(MisconfigurationException, match=r"do not read a class's score"):
        CAMWriter(str(tmp_path), target="binary", metrics=["average_drop"])
    with pytest.raises(MisconfigurationException, match=r"sanity check explains classes"):
        CAMWriter(str(tmp_path), target="regression:0", metrics=[], sanity_samples=2)
