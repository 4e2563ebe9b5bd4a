"""GradCAMCallback / GradCAMPlusPlusCallback with a real Trainer and a real TensorBoardLogger."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import lightning_cam as lc
from lightning_cam._compat import MisconfigurationException
from tests.callbacks.helpers import image_events, loaders, make_module_cls, scalar_events
from tests.optional import require
from tests.ports import free_port


def _trainer(
    tmp_path: Any, callbacks: list[Any], namespace: str = "pytorch_lightning", **kw: Any
) -> Any:
    import importlib

    L = importlib.import_module(namespace)
    logger_mod = importlib.import_module(f"{namespace}.loggers")
    kw.setdefault("logger", logger_mod.TensorBoardLogger(str(tmp_path), name="tb", version=0))
    kw.setdefault("max_epochs", 2)
    return L.Trainer(
        default_root_dir=str(tmp_path),
        callbacks=callbacks,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=kw.pop("enable_checkpointing", False),
        deterministic=True,
        **kw,
    )


def _tb_dir(tmp_path: Any) -> str:
    return os.path.join(str(tmp_path), "tb", "version_0")


def test_two_epochs_log_documented_tags_at_two_steps(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(
        layer="backbone",
        num_samples=6,
        log_heatmap=True,
        log_guided_backprop=True,
        class_names=["a", "b", "c"],
        tile_size=32,
    )
    train, val = loaders()
    trainer = _trainer(tmp_path, [cb])
    trainer.fit(make_module_cls()(), train, val)
    images = image_events(_tb_dir(tmp_path))
    kinds = ["heatmap", "overlay", "guided_backprop", "guided_gradcam"]
    assert sorted(images) == sorted(f"gradcam/backbone/{k}" for k in kinds)
    steps_per_epoch = 4  # 32 samples / batch 8
    for tag, events in images.items():
        assert sorted(e.step for e in events) == [steps_per_epoch, 2 * steps_per_epoch], tag
        # 6 tiles of 32 px in a 4-column grid with 2 px padding: 2 rows x 4 columns
        assert (events[0].width, events[0].height) == (4 * 32 + 5 * 2, 2 * 32 + 3 * 2)
    scalars = scalar_events(_tb_dir(tmp_path))
    assert sorted(e.step for e in scalars["gradcam/backbone/pointing_game"]) == [4, 8]
    assert all(0 <= e.value <= 1 for e in scalars["gradcam/backbone/energy_pointing_game"])
    # the probes are the first 6 validation images, on CPU
    assert cb.probes is not None and cb.probes["image"].device.type == "cpu"
    torch.testing.assert_close(
        cb.probes["image"][:6], torch.stack([val.dataset[i]["image"] for i in range(6)])
    )


def test_grid_tiles_decode_and_show_num_samples(tmp_path: Any) -> None:
    import cv2

    cb = lc.GradCAMPlusPlusCallback(
        layer="backbone.3", num_samples=3, tile_size=24, log_guided_gradcam=False
    )
    train, val = loaders()
    _trainer(tmp_path, [cb], max_epochs=1).fit(make_module_cls()(), train, val)
    (event,) = image_events(_tb_dir(tmp_path))["gradcam++/backbone.3/overlay"]
    img = cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (24 + 4, 3 * 24 + 4 * 2, 3)
    # padding columns between tiles are white: three tiles
    assert (img[:, 2 + 24 : 2 + 24 + 2] == 255).all()


def test_validate_under_inference_mode_and_without(tmp_path: Any) -> None:
    for inference_mode in (True, False):
        sub = tmp_path / str(inference_mode)
        cb = lc.GradCAMCallback(layer="backbone")
        _, val = loaders()
        trainer = _trainer(sub, [cb], inference_mode=inference_mode)
        trainer.validate(make_module_cls()(), val)
        assert "gradcam/backbone/overlay" in image_events(_tb_dir(sub))


def test_trainer_test_logs_with_prefix(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone")
    _, val = loaders()
    _trainer(tmp_path, [cb]).test(make_module_cls()(), val)
    assert "test/gradcam/backbone/overlay" in image_events(_tb_dir(tmp_path))


def test_bf16_mixed_and_mid_epoch_validation(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone")
    train, val = loaders()
    trainer = _trainer(
        tmp_path,
        [cb],
        precision="bf16-mixed",
        val_check_interval=0.5,
        max_epochs=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(make_module_cls()(), train, val)
    events = image_events(_tb_dir(tmp_path))["gradcam/backbone/overlay"]
    assert sorted(e.step for e in events) == [2, 4]
    assert cb.last_explanation is not None
    assert cb.last_explanation.cams["gradcam"]["backbone"].dtype == torch.float32


def test_tuple_batches_default_layer_and_label_target(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(target="label", metrics=[])
    train, val = loaders(dict_batches=False)
    _trainer(tmp_path, [cb], max_epochs=1).fit(make_module_cls()(dict_batches=False), train, val)
    assert "gradcam/backbone/overlay" in image_events(_tb_dir(tmp_path))
    assert cb.last_explanation is not None and cb.probes is not None
    assert cb.last_explanation.class_ids.tolist() == cb.probes["label"][:8].tolist()


def test_both_callbacks_share_one_computation(tmp_path: Any, monkeypatch: Any) -> None:
    calls: list[list[str]] = []
    original = lc.Explainer.__call__

    def counting(self: Any, images: torch.Tensor, *a: Any, **k: Any) -> Any:
        if images.shape[0] == 8:  # the probe set (the first-batch checks use 2 images)
            calls.append(list(self.methods))
        return original(self, images, *a, **k)

    monkeypatch.setattr(lc.Explainer, "__call__", counting)
    cbs = [lc.GradCAMCallback(layer="backbone"), lc.GradCAMPlusPlusCallback(layer="backbone")]
    train, val = loaders()
    _trainer(tmp_path, cbs, max_epochs=1).fit(make_module_cls()(), train, val)
    assert calls == [["gradcam", "gradcam++"]]
    tags = image_events(_tb_dir(tmp_path))
    assert {"gradcam/backbone/overlay", "gradcam++/backbone/overlay"} <= set(tags)


def test_identical_training_with_and_without_callbacks(tmp_path: Any) -> None:
    """Parameters, grads accumulated across a mid-epoch validation, RNG: all untouched."""

    def run(callbacks: list[Any], sub: str) -> dict[str, torch.Tensor]:
        pl.seed_everything(7)
        model = make_module_cls()()
        train, val = loaders(n_train=48)
        trainer = _trainer(
            tmp_path / sub,
            callbacks,
            max_epochs=2,
            accumulate_grad_batches=2,
            val_check_interval=0.5,
        )
        trainer.fit(model, train, val)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["__rng__"] = torch.rand(3)
        return state

    plain = run([], "plain")
    with_cbs = run(
        [
            lc.GradCAMCallback(layer="backbone", log_guided_backprop=True),
            lc.GradCAMPlusPlusCallback(metrics=["pointing_game", "average_drop"]),
        ],
        "cams",
    )
    assert plain.keys() == with_cbs.keys()
    for k in plain:
        assert torch.equal(plain[k], with_cbs[k]), k


def test_resume_keeps_the_probe_set(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone", num_samples=4)
    train, val = loaders()
    trainer = _trainer(tmp_path / "a", [cb], max_epochs=1, enable_checkpointing=True)
    trainer.fit(make_module_cls()(), train, val)
    ckpt = trainer.checkpoint_callback.best_model_path
    assert ckpt and cb.probes is not None
    # resume with *different* validation data: the stored probe set is used
    cb2 = lc.GradCAMCallback(layer="backbone", num_samples=4)
    train2, val2 = loaders(val_seed=5, val_offset=0.3)
    trainer2 = _trainer(tmp_path / "b", [cb2], max_epochs=2)
    trainer2.fit(make_module_cls()(), train2, val2, ckpt_path=ckpt)
    assert cb2.probes is not None
    torch.testing.assert_close(cb2.probes["image"], cb.probes["image"])
    saved = torch.load(ckpt, weights_only=False)["callbacks"]
    assert any(k.startswith("GradCAMCallback") for k in saved)


def test_lightning_namespace(tmp_path: Any) -> None:
    require("lightning", "pip install lightning (the dev extra)")
    cb = lc.GradCAMCallback(layer="backbone")
    train, val = loaders()
    trainer = _trainer(tmp_path, [cb], namespace="lightning.pytorch", max_epochs=1)
    trainer.fit(make_module_cls("lightning.pytorch")(), train, val)
    assert "gradcam/backbone/overlay" in image_events(_tb_dir(tmp_path))


def test_no_logger_writes_pngs_and_warns_once(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone")
    train, val = loaders()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        _trainer(tmp_path, [cb], logger=False, max_epochs=2).fit(make_module_cls()(), train, val)
    mine = [w for w in rec if "GradCAMCallback" in str(w.message)]
    assert len(mine) == 1 and "no logger" in str(mine[0].message)
    pngs = sorted((tmp_path / "cam_images").rglob("*.png"))
    assert len(pngs) == 4  # overlay + guided_gradcam, two epochs


def test_no_logger_pngs_stay_out_of_the_package_folder(tmp_path: Any, monkeypatch: Any) -> None:
    """Run from a checkout's root (default_root_dir "."): the PNGs go to ./cam_images, never into
    ./lightning_cam, the package's own folder."""
    package = tmp_path / "lightning_cam"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    cb = lc.GradCAMCallback(layer="backbone", log_guided_gradcam=False)
    train, val = loaders()
    trainer = pl.Trainer(
        callbacks=[cb], accelerator="cpu", devices=1, logger=False, max_epochs=1,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    with pytest.warns(UserWarning, match="cam_images"):
        trainer.fit(make_module_cls()(), train, val)
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py"]
    pngs = sorted((tmp_path / "cam_images").rglob("step_*.png"))
    assert [p.relative_to(tmp_path).as_posix() for p in pngs] == [
        "cam_images/gradcam/backbone/overlay/step_0000004.png"
    ]


def test_logger_without_images_gets_pngs(tmp_path: Any) -> None:
    from pytorch_lightning.loggers import CSVLogger

    cb = lc.GradCAMCallback(layer="backbone", log_guided_gradcam=False)
    train, val = loaders()
    logger = CSVLogger(str(tmp_path), name="csv", version=0)
    _trainer(tmp_path, [cb], logger=logger, max_epochs=1).fit(make_module_cls()(), train, val)
    assert list((tmp_path / "csv" / "version_0" / "cam_images").rglob("step_*.png"))
    metrics = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text()
    assert "gradcam/backbone/pointing_game" in metrics


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, r"num_samples=0 is invalid: expected an int >= 1"),
        ({"every_n_epochs": -1}, r"every_n_epochs=-1 is invalid"),
        ({"target": "truth"},
         r"target='truth' is invalid: expected 'pred', 'label', 'labels' .* or a class id"),
        ({"mean": [0.5]}, r"give both"),
        (
            {"mean": [0.5, 0.5], "std": [1.0]},
            r"std=\[1.0\] is invalid: expected as many values as mean",
        ),
        ({"colormap": "jett"}, r"colormap='jett' is invalid.*did you mean 'jet'"),
        ({"alpha": 2}, r"alpha=2 is invalid: expected a number in \[0, 1\]"),
        (
            {"metrics": ["pointing"]},
            r"metrics=\['pointing'\] is invalid.*did you mean 'pointing_game'",
        ),
        ({"layer": 3}, r"layer=3 is invalid"),
        ({"log_overlay": False, "log_guided_gradcam": False, "metrics": []}, "Nothing to log"),
    ],
)
def test_misconfiguration(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(MisconfigurationException, match=match):
        lc.GradCAMCallback(**kwargs)


def test_misconfiguration_is_both_namespaces_exception() -> None:
    from pytorch_lightning.utilities.exceptions import MisconfigurationException as PLE

    with pytest.raises(PLE):
        lc.GradCAMCallback(num_samples=0)
    lexc = require(
        "lightning.pytorch.utilities.exceptions", "pip install lightning (the dev extra)"
    )
    with pytest.raises(lexc.MisconfigurationException):
        lc.GradCAMCallback(num_samples=0)


def test_unknown_layer_at_setup_lists_close_names(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbon.3")
    train, val = loaders()
    with pytest.raises(
        MisconfigurationException, match=r"layer='backbon.3' is not a module.*backbone.3"
    ):
        _trainer(tmp_path, [cb], max_epochs=1).fit(make_module_cls()(), train, val)


def test_non_image_batch_is_explained(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone", image_key="pixels")
    train, val = loaders()
    with pytest.raises(MisconfigurationException, match=r"image_key='pixels' is not in the batch"):
        _trainer(tmp_path, [cb], max_epochs=1, num_sanity_val_steps=0).fit(
            make_module_cls()(), train, val
        )


DDP_SCRIPT = r"""
import os, sys, torch
sys.path.insert(0, {root!r})
import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
import lightning_cam as lc
from tests.callbacks.helpers import loaders, make_module_cls
torch.set_num_threads(1)
pl.seed_everything(0)
cb = lc.GradCAMCallback(layer="backbone")
train, val = loaders()
trainer = pl.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=2,
                     logger=TensorBoardLogger({out!r}, name="tb", version=0),
                     callbacks=[cb], enable_progress_bar=False, enable_checkpointing=False,
                     enable_model_summary=False, use_distributed_sampler=True)
trainer.fit(make_module_cls()(), train, val)
shape = None if cb.probes is None else tuple(cb.probes["image"].shape)
print("RANK", trainer.global_rank, "PROBES", shape, flush=True)
"""


def test_ddp_two_cpu_processes(tmp_path: Any) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT.format(root=root, out=str(tmp_path)))
    env = dict(os.environ, PL_TORCH_DISTRIBUTED_BACKEND="gloo", MASTER_PORT=free_port())
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "RANK 0 PROBES (8, 3, 16, 16)" in proc.stdout
    assert "RANK 1 PROBES None" in proc.stdout
    events = image_events(_tb_dir(tmp_path))["gradcam/backbone/overlay"]
    assert len(events) == 2  # rank zero only, once per epoch
