"""``lightning-cam predict --config configs/shapes_explain.yaml`` and ``explain --data``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
import yaml

from lightning_cam import cli
from lightning_cam.data import ShapesDataset
from lightning_cam.predict import load_maps
from lightning_cam.predict.writer import overlay_stem
from lightning_cam.tools import viz
from tests.optional import require

ROOT = Path(__file__).resolve().parents[2]


def _checkpoint(path: Path) -> Path:
    import pytorch_lightning as pl

    from lightning_cam.models import ShapesClassifier

    torch.manual_seed(0)
    model = ShapesClassifier(class_names=["circle", "square", "triangle", "star"])
    torch.save({"state_dict": model.state_dict(), "pytorch-lightning_version": pl.__version__},
               path)
    return path


def test_predict_subcommand_with_the_shipped_config(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = yaml.safe_load((ROOT / "configs" / "shapes_explain.yaml").read_text())
    writer = config["trainer"]["callbacks"][0]["init_args"]
    assert writer["layer"] == "backbone" and config["data"]["init_args"]["predict_split"] == "val"
    writer.update(output_dir=str(tmp_path / "out"), sanity_samples=2, sanity_stages=2,
                  overlays=1, metrics=["pointing_game", "localisation_error", "deletion_auc"],
                  deletion_steps=2)
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "logs")
    config["trainer"]["enable_progress_bar"] = False
    config["data"]["init_args"].update(num_val=6, batch_size=4)
    small = tmp_path / "config.yaml"
    small.write_text(yaml.safe_dump(config))
    ckpt = _checkpoint(tmp_path / "model.ckpt")
    assert cli.main(["predict", "--config", str(small), "--ckpt_path", str(ckpt)]) == 0
    printed = capsys.readouterr().out
    assert "| gradcam | `backbone` |" in printed and "Sanity check" in printed
    df = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert sorted(df["index"]) == list(range(6))
    # the validation split, not the test split
    dm_val = ShapesDataset(6, seed=_val_seed(), image_size=64)
    assert sorted(df["label"]) == sorted(int(dm_val[i]["label"]) for i in range(6))
    assert len(list((tmp_path / "out" / "overlays").glob("*.jpg"))) == 2


def _val_seed() -> int:
    from lightning_cam.data import ShapesDataModule

    return ShapesDataModule(seed=0).split_seed("val")


def _folder(root: Path, tree: bool) -> Path:
    data = ShapesDataset(6, image_size=48, seed=2, classes=("circle", "square"))
    for i in range(6):
        s = data[i]
        sub = root / (data.class_names[int(s["label"])] if tree else "")
        sub.mkdir(parents=True, exist_ok=True)
        viz.save_image(sub / f"im{i}.png", viz.to_uint8_image(s["image"]))
    return root


def _weights(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None, num_classes=2).state_dict(), path)
    return path


def _explain(*args: str) -> int:
    return cli.main(["explain", *args])


def test_explain_data_on_an_image_folder_tree(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = _folder(tmp_path / "data", tree=True)
    w = _weights(tmp_path / "w.pth")
    args = ["--data", str(data), "--output-dir", str(tmp_path / "out"), "--network", "resnet18",
            "--weight-path", str(w), "--image-size", "64", "--batch-size", "4",
            "--metrics", "average_drop", "--overlays", "1"]
    assert _explain(*args) == 0
    out = capsys.readouterr().out
    assert "| gradcam | `model.layer4` |" in out and "6 images explained" in out
    df = pd.read_parquet(tmp_path / "out" / "manifest.parquet").sort_values("index")
    assert df["id"].tolist() == sorted(p.relative_to(data).as_posix()
                                       for p in data.rglob("*.png"))
    assert df["label"].tolist() == [0 if i.startswith("circle/") else 1 for i in df["id"]]
    stem = overlay_stem("circle/im0.png")
    assert (tmp_path / "out" / "overlays" / f"{stem}-gradcam-model.layer4.jpg").exists()
    # the --data folder is recorded: `lightning-cam report OUT` finds the images
    assert "lightning-cam report" in out
    assert cli.main(["report", str(tmp_path / "out"), "--quiet"]) == 0
    assert len(list((tmp_path / "out" / "report" / "thumbs").glob("*.jpg"))) == 6
    # a rerun with the same arguments has nothing left to do and keeps the outputs
    assert _explain(*args, "--quiet") == 0
    assert len(pd.read_parquet(tmp_path / "out" / "manifest.parquet")) == 6
    # another configuration in the same folder is refused
    assert _explain(*args[:-4], "--methods", "gradcam", "--quiet") == 2
    assert "another configuration" in capsys.readouterr().err


def test_explain_data_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = _weights(tmp_path / "w.pth")
    base = ["--network", "resnet18", "--weight-path", str(w), "--quiet"]
    assert _explain("--data", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o"),
                    *base) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _explain("--data", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "o"),
                    *base) == 2
    assert "No image files" in capsys.readouterr().err
    data = _folder(tmp_path / "flat", tree=False)
    (tmp_path / "file").write_text("x")
    assert _explain("--data", str(data), "--output-dir", str(tmp_path / "file"), *base) == 2
    assert "is a file" in capsys.readouterr().err
    assert _explain("--data", str(data), "--output-dir", str(tmp_path / "flat_out"), *base,
                    "--image-size", "64", "--metrics") == 0
    df = pd.read_parquet(tmp_path / "flat_out" / "manifest.parquet")
    assert df["label"].isna().all() and sorted(df["id"]) == [f"im{i}.png" for i in range(6)]


# ----------------------------------------------------------------------------- issue 19


def test_explain_data_skips_an_unreadable_file_and_records_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _folder(tmp_path / "data", tree=False)
    (data / "._im0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")  # macOS metadata
    args = ["--data", str(data), "--output-dir", str(tmp_path / "out"), "--network", "resnet18",
            "--weight-path", str(_weights(tmp_path / "w.pth")), "--image-size", "64",
            "--metrics", "average_drop"]
    assert _explain(*args) == 0
    assert "6 images explained, 1 not " in capsys.readouterr().out
    df = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("id")
    assert df.loc["._im0.png", "status"].startswith("unreadable: ")
    assert (df.drop(index="._im0.png")["status"] == "ok").all()
    assert np.isnan(df.loc["._im0.png", "gradcam/model.layer4/average_drop"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["metrics"]["gradcam"]["model.layer4"]["average_drop"]["count"] == 6
    assert sum(n for s, n in summary["status"].items() if s != "ok") == 1
    assert _explain(*args, "--quiet") == 0  # a rerun goes past it too


def test_explain_data_refuses_other_data_in_the_same_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = str(_weights(tmp_path / "w.pth"))
    first = _folder(tmp_path / "a", tree=False)
    other = tmp_path / "b"
    other.mkdir()
    for p in sorted(first.iterdir()):  # the same pictures under other names
        (other / f"x{p.name}").write_bytes(p.read_bytes())
    base = ["--output-dir", str(tmp_path / "out"), "--network", "resnet18", "--weight-path", w,
            "--metrics", "--quiet"]
    assert _explain("--data", str(first), *base, "--image-size", "64") == 0
    assert _explain("--data", str(first), *base, "--image-size", "48") == 2
    assert "another image size" in capsys.readouterr().err
    assert _explain("--data", str(other), *base, "--image-size", "64") == 2
    assert "'im0.png' then, 'xim0.png' now" in capsys.readouterr().err
    assert _explain("--data", str(first), *base, "--image-size", "64") == 0


def _hf_folder(folder: Path, head: bool = True) -> Path:
    transformers = require("transformers", "pip install transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2, id2label={0: "square", 1: "circle"},
        label2id={"square": 0, "circle": 1},
    )
    cls = transformers.ViTForImageClassification if head else transformers.ViTModel
    cls(config).eval().save_pretrained(folder)
    return folder


def test_explain_data_hf_network_with_labels_by_class_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _folder(tmp_path / "data", tree=True)
    hf = _hf_folder(tmp_path / "vit")
    assert _explain("--data", str(data), "--output-dir", str(tmp_path / "out"), "--network",
                    f"hf:{hf}", "--metrics", "average_drop", "--quiet") == 0
    df = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    # the model's ids (square = 0, circle = 1), not the sorted folder index (circle = 0)
    assert df["label"].tolist() == [1 if i.startswith("circle/") else 0 for i in df["id"]]
    assert df["predicted_prob"].between(0, 1).all()
    (data / "triangle").mkdir()
    (data / "circle" / "im0.png").rename(data / "triangle" / "im0.png")
    assert _explain("--data", str(data), "--output-dir", str(tmp_path / "o2"), "--network",
                    f"hf:{hf}", "--quiet") == 2
    assert "'triangle'" in capsys.readouterr().err


def test_explain_an_hf_folder_without_a_classification_head_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _folder(tmp_path / "data", tree=False)
    hf = _hf_folder(tmp_path / "bare", head=False)
    assert _explain("--data", str(data), "--output-dir", str(tmp_path / "out"), "--network",
                    f"hf:{hf}", "--quiet") == 2
    err = capsys.readouterr().err
    assert "without a classification head" in err and "ViTModel" in err


def test_explain_data_raw_maps(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data", tree=False)
    w = _weights(tmp_path / "w.pth")
    args = ["--data", str(data), "--network", "resnet18", "--weight-path", str(w),
            "--image-size", "64", "--batch-size", "4", "--metrics", "average_drop", "--quiet"]
    assert _explain(*args, "--output-dir", str(tmp_path / "raw"), "--raw-maps") == 0
    assert _explain(*args, "--output-dir", str(tmp_path / "unit")) == 0
    raw = pd.read_parquet(tmp_path / "raw" / "manifest.parquet").sort_values("index")
    unit = pd.read_parquet(tmp_path / "unit" / "manifest.parquet").sort_values("index")
    r, u = raw.iloc[0], unit.iloc[0]
    key = "cam/gradcam/model.layer4"
    big = load_maps(tmp_path / "raw", r["shard"], int(r["row"]), key)
    small = load_maps(tmp_path / "unit", u["shard"], int(u["row"]), key)
    assert big.max() > 0 and small.max() == pytest.approx(1.0, abs=1e-3)
    # the same map, at its own scale
    np.testing.assert_allclose((big - big.min()) / (big.max() - big.min()), small, atol=2e-3)
