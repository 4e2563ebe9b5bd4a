"""The CAM callbacks in the Lightning workflows people use, each with a real Trainer and the
logged events read back: fast_dev_run, repeated validate()/test(), every_n_epochs, outputs that
are not a logits tensor, batches the callbacks cannot explain (refused at the first batch),
several dataloaders, limits and intervals, resume, mixed precision, loggers."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import lightning_cam as lc
from lightning_cam._compat import MisconfigurationException
from lightning_cam.tools import viz
from tests.callbacks.helpers import (
    BlobData,
    decode,
    image_events,
    loaders,
    make_module_cls,
    make_output_module_cls,
    make_trainer,
    scalar_events,
    tb_dir,
)


def _steps(events: list[Any]) -> list[int]:
    return sorted(e.step for e in events)


def test_fast_dev_run_computes_and_writes_nothing(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone", every_n_epochs=3)
    train, val = loaders()
    trainer = make_trainer(tmp_path, [cb], fast_dev_run=True)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        trainer.fit(make_module_cls()(), train, val)
    # the whole path ran (every_n_epochs does not skip a smoke test) ...
    assert cb.last_explanation is not None
    # ... and nothing was written: no PNG fallback, no event file, no warning about loggers
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("events.out.*"))
    assert not [w for w in rec if "GradCAMCallback" in str(w.message)]


def test_fast_dev_run_from_the_cli(tmp_path: Any, monkeypatch: Any) -> None:
    from pathlib import Path

    from lightning_cam.cli import main

    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[2] / "configs" / "shapes.yaml"
    main(["fit", "--config", str(config), "--trainer.fast_dev_run", "true",
          "--data.num_train", "64", "--data.num_val", "64", "--trainer.enable_progress_bar",
          "false"])  # fmt: skip
    assert not list(tmp_path.rglob("*.png"))


def test_two_validate_runs_at_one_step_show_each_model(tmp_path: Any) -> None:
    """Two models (and two checkpoints of one) validated at the same global step: each run
    logs its own model's maps, never the first run's again."""
    cb = lc.GradCAMCallback(layer="backbone", num_samples=4, log_guided_gradcam=False)
    _, val = loaders()
    trainer = make_trainer(tmp_path, [cb])
    got = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = make_module_cls()()
        trainer.validate(model, val)
        assert cb.last_explanation is not None and cb.probes is not None
        want = lc.explain(model.eval(), cb.probes["image"], layer="backbone")
        torch.testing.assert_close(cb.last_explanation.cams["gradcam"]["backbone"],
                                   want.cams["gradcam"]["backbone"])
        torch.testing.assert_close(cb.last_explanation.logits, want.logits)
        got.append(cb.last_explanation.cams["gradcam"]["backbone"])
    assert (got[0] - got[1]).abs().max() > 0.1
    events = image_events(tb_dir(tmp_path))["gradcam/backbone/overlay"]
    assert _steps(events) == [0, 0]
    assert events[0].encoded_image_string != events[1].encoded_image_string


def test_validate_two_checkpoints_at_one_step(tmp_path: Any) -> None:
    train, val = loaders()
    model = make_module_cls()()
    fitter = make_trainer(tmp_path / "fit", [], max_epochs=2, logger=False)
    ckpts = []
    for epoch in range(2):
        fitter.fit_loop.max_epochs = epoch + 1
        fitter.fit(model, train, val)
        ckpts.append(str(tmp_path / f"e{epoch}.ckpt"))
        fitter.save_checkpoint(ckpts[-1])
    cb = lc.GradCAMCallback(layer="backbone", num_samples=4)
    trainer = make_trainer(tmp_path, [cb])
    maps = []
    for ckpt in ckpts:
        trainer.validate(model, val, ckpt_path=ckpt)
        assert cb.last_explanation is not None
        want = lc.explain(model.eval(), cb.probes["image"], layer="backbone")
        torch.testing.assert_close(cb.last_explanation.cams["gradcam"]["backbone"],
                                   want.cams["gradcam"]["backbone"])
        maps.append(cb.last_explanation.cams["gradcam"]["backbone"])
    assert not torch.equal(maps[0], maps[1])


def test_test_runs_at_one_step_are_not_shared_either(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone", num_samples=4)
    _, val = loaders()
    trainer = make_trainer(tmp_path, [cb])
    first = None
    for seed in (1, 2):
        torch.manual_seed(seed)
        trainer.test(make_module_cls()(), val)
        assert cb.last_explanation is not None
        if first is None:
            first = cb.last_explanation
    assert cb.last_explanation is not first


@pytest.mark.parametrize(
    ("check_every", "every_n", "steps"),
    [(2, 2, [16]), (1, 2, [8, 16]), (1, 3, [12])],
)
def test_every_n_epochs_counts_validation_runs(
    tmp_path: Any, check_every: int, every_n: int, steps: list[int]
) -> None:
    cb = lc.GradCAMCallback(layer="backbone", every_n_epochs=every_n, log_guided_gradcam=False)
    train, val = loaders()
    trainer = make_trainer(tmp_path, [cb], max_epochs=4, check_val_every_n_epoch=check_every)
    trainer.fit(make_module_cls()(), train, val)
    assert _steps(image_events(tb_dir(tmp_path))["gradcam/backbone/overlay"]) == steps


def test_every_n_epochs_counts_mid_epoch_validations(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone", every_n_epochs=2, log_guided_gradcam=False)
    train, val = loaders()
    # validation every 2 training batches (an int interval): 2 runs per epoch, steps 2, 4, 6, 8
    trainer = make_trainer(tmp_path, [cb], max_epochs=2, val_check_interval=2)
    trainer.fit(make_module_cls()(), train, val)
    assert _steps(image_events(tb_dir(tmp_path))["gradcam/backbone/overlay"]) == [4, 8]


def test_every_n_epochs_continues_after_resume(tmp_path: Any) -> None:
    train, val = loaders()
    cb = lc.GradCAMCallback(layer="backbone", every_n_epochs=2, log_guided_gradcam=False)
    trainer = make_trainer(tmp_path / "a", [cb], max_epochs=1)
    trainer.fit(make_module_cls()(), train, val)  # run 1: not logged
    ckpt = str(tmp_path / "a.ckpt")
    trainer.save_checkpoint(ckpt)
    cb2 = lc.GradCAMCallback(layer="backbone", every_n_epochs=2, log_guided_gradcam=False)
    trainer2 = make_trainer(tmp_path, [cb2], max_epochs=4)
    trainer2.fit(make_module_cls()(), train, val, ckpt_path=ckpt)  # runs 2, 3, 4
    assert _steps(image_events(tb_dir(tmp_path))["gradcam/backbone/overlay"]) == [8, 16]
    assert cb2.probes is not None and cb.probes is not None
    assert torch.equal(cb2.probes["image"], cb.probes["image"])


@pytest.mark.parametrize(
    ("output", "kwargs"),
    [
        ("tuple", {}),  # (logits, features): the one (B, num_classes) tensor is the logits
        ("dict", {"output_transform": "tests.callbacks.helpers.logits_of"}),  # dotted path
        ("dict", {"output_transform": lambda out: out["scores"]}),
    ],
)
def test_outputs_other_than_a_logits_tensor(tmp_path: Any, output: str, kwargs: Any) -> None:
    cb = lc.GradCAMCallback(
        layer="backbone", metrics=["pointing_game", "average_drop"], target="label", **kwargs
    )
    train, val = loaders()
    module = make_output_module_cls(output)()
    make_trainer(tmp_path, [cb]).fit(module, train, val)
    assert "gradcam/backbone/overlay" in image_events(tb_dir(tmp_path))
    assert "gradcam/backbone/average_drop" in scalar_events(tb_dir(tmp_path))
    result = cb.last_explanation
    assert result is not None and cb.probes is not None
    assert result.class_ids.tolist() == cb.probes["label"].tolist()
    logits = module.eval().logits(cb.probes["image"])
    torch.testing.assert_close(result.logits, logits)
    plain = make_module_cls()()
    plain.load_state_dict(module.state_dict())
    want = lc.explain(plain.eval(), cb.probes["image"], layer="backbone",
                      target=cb.probes["label"])
    torch.testing.assert_close(result.cams["gradcam"]["backbone"],
                               want.cams["gradcam"]["backbone"])


def test_scores_from_output_transform_are_explained(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone", output_transform=lambda out: out[:, 1], metrics=[])
    train, val = loaders()
    module = make_module_cls()()
    make_trainer(tmp_path, [cb]).fit(module, train, val)
    result = cb.last_explanation
    assert result is not None and result.logits is None and result.class_ids is None
    want = lc.explain(module.eval(), cb.probes["image"], layer="backbone", target=1)
    torch.testing.assert_close(result.cams["gradcam"]["backbone"],
                               want.cams["gradcam"]["backbone"])


def _fit_refused(tmp_path: Any, cb: Any, module: Any, val: Any, match: str, **kw: Any) -> None:
    """The fit is refused before the first optimizer step, with a message matching ``match``."""
    train, _ = loaders()
    trainer = make_trainer(tmp_path, [cb], **kw)
    with pytest.raises(MisconfigurationException, match=match):
        trainer.fit(module, train, val)
    assert trainer.global_step == 0


def test_ambiguous_output_is_refused_before_training(tmp_path: Any) -> None:
    base = make_output_module_cls("dict")

    class TwoHeads(base):  # type: ignore[misc, valid-type]
        def forward(self, x: torch.Tensor) -> Any:
            out = super().forward(x)
            return {"scores": out["scores"], "aux": out["scores"] * 2}

    _, val = loaders()
    module = TwoHeads()
    module.hparams.pop("num_classes")  # no num_classes to tell the logits apart
    _fit_refused(tmp_path, lc.GradCAMCallback(layer="backbone"), module, val,
                 r"Cannot tell the class logits.*2 items could be the logits.*output_transform",
                 num_sanity_val_steps=0)  # fmt: skip


def test_bad_output_transform_path_is_refused_at_construction() -> None:
    with pytest.raises(MisconfigurationException, match=r"output_transform='tests.nope.f'"):
        lc.GradCAMCallback(output_transform="tests.nope.f")
    with pytest.raises(MisconfigurationException, match=r"output_transform='nodots'"):
        lc.GradCAMCallback(output_transform="nodots")


def test_layer_that_is_not_a_feature_map_is_refused_before_training(tmp_path: Any) -> None:
    _, val = loaders()
    _fit_refused(tmp_path, lc.GradCAMCallback(layer="head"), make_module_cls()(), val,
                 r"layer=\['head'\] cannot be explained.*not a spatial feature map",
                 num_sanity_val_steps=0)  # fmt: skip


class _Batches(torch.utils.data.Dataset):
    def __init__(self, make: Any, n: int = 16) -> None:
        self.items = [make(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


def test_two_channel_images_are_refused_at_the_first_batch(tmp_path: Any) -> None:
    """A model of 2-channel inputs trains fine; its images cannot be shown as pictures."""
    data = DataLoader(_Batches(lambda i: (torch.rand(2, 16, 16), torch.tensor(i % 3))),
                      batch_size=8)  # fmt: skip
    module = make_module_cls()(dict_batches=False)
    module.backbone[0] = torch.nn.Conv2d(2, 8, 3, padding=1)
    trainer = make_trainer(tmp_path, [lc.GradCAMCallback(layer="backbone")])
    with pytest.raises(MisconfigurationException,
                       match=r"cannot show the probe images \(8, 2, 16, 16\) float32.*3-channel"):
        trainer.fit(module, data, data)
    assert trainer.global_step == 0


def test_one_hot_labels_with_target_label_are_refused_at_the_first_batch(tmp_path: Any) -> None:
    data = BlobData(16, seed=1, dict_batches=True)
    one_hot = [dict(d, label=torch.nn.functional.one_hot(d["label"], 3).float()) for d in
               (data[i] for i in range(16))]  # fmt: skip
    val = DataLoader(one_hot, batch_size=8)
    _fit_refused(tmp_path, lc.GradCAMCallback(layer="backbone", target="label"),
                 make_module_cls()(), val,
                 r"target='label' needs class ids \(B,\).*\(8, 3\) torch.float32.*one-hot"
                 r".*argmax")  # fmt: skip


def _uint8_val() -> DataLoader:
    data = BlobData(16, seed=1, dict_batches=True)
    items = [dict(d, image=(d["image"].clamp(0, 1) * 255).to(torch.uint8))
             for d in (data[i] for i in range(16))]  # fmt: skip
    return DataLoader(items, batch_size=8)


def test_uint8_images_for_a_float_model_are_refused_naming_the_dtype(tmp_path: Any) -> None:
    """The steps convert the batches' uint8 images, the model takes floats: a float copy of the
    uint8 values would be another input, so the callback refuses and names the dtype."""
    base = make_module_cls()

    class StepsNormalise(base):  # type: ignore[misc, valid-type]
        def _split(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
            x = batch["image"]
            return (x.float() / 255 if x.dtype == torch.uint8 else x), batch["label"]

    _fit_refused(tmp_path, lc.GradCAMCallback(layer="backbone"), StepsNormalise(), _uint8_val(),
                 r"\(2, 3, 16, 16\) uint8; gradients need float images.*x.float\(\) / 255")


def test_uint8_images_for_a_model_that_converts_them_work(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone", num_samples=4)
    module = make_output_module_cls("uint8")()
    make_trainer(tmp_path, [cb]).validate(module, _uint8_val())
    assert cb.probes is not None and cb.probes["image"].dtype == torch.uint8
    want = lc.explain(module.eval(), cb.probes["image"].float(), layer="backbone")
    torch.testing.assert_close(cb.last_explanation.cams["gradcam"]["backbone"],
                               want.cams["gradcam"]["backbone"])
    # the picture shows the uint8 images as they are
    (event,) = image_events(tb_dir(tmp_path))["gradcam/backbone/overlay"]
    assert decode(event).shape[2] == 3


def test_probes_from_validate_are_ordinary_tensors(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone")
    _, val = loaders()
    trainer = make_trainer(tmp_path, [cb])
    trainer.validate(make_module_cls()(), val)  # inference mode
    assert cb.probes is not None
    for value in cb.probes.values():
        assert not value.is_inference() and value.device.type == "cpu"
    x = cb.probes["image"].clone().requires_grad_(True)
    (x * 2).sum().backward()  # user code can differentiate them
    state = cb.state_dict()
    assert not state["probes"]["image"].is_inference()
    fresh = lc.GradCAMCallback(layer="backbone")
    with torch.inference_mode():
        fresh.load_state_dict(state)
    assert not fresh.probes["image"].is_inference()


def test_several_validation_dataloaders(tmp_path: Any) -> None:
    _, val_a = loaders()
    _, val_b = loaders(val_seed=5, val_offset=0.3)
    cb = lc.GradCAMCallback(layer="backbone", dataloader_idx=1, num_samples=4)
    make_trainer(tmp_path, [cb]).fit(make_module_cls()(), loaders()[0], [val_a, val_b])
    assert cb.probes is not None
    assert torch.equal(cb.probes["image"], torch.stack([val_b.dataset[i]["image"]
                                                        for i in range(4)]))
    assert "gradcam/backbone/overlay" in image_events(tb_dir(tmp_path))


def test_dataloader_idx_beyond_the_dataloaders_is_refused_before_training(tmp_path: Any) -> None:
    _, val = loaders()
    _fit_refused(tmp_path, lc.GradCAMCallback(layer="backbone", dataloader_idx=2),
                 make_module_cls()(), [val, val],
                 r"dataloader_idx=2 is invalid: this run has 2 dataloader\(s\); expected 0..1")


def test_limit_val_batches_gives_fewer_probes(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone", num_samples=8, metrics_num_samples=32)
    train, val = loaders(batch_size=4)
    make_trainer(tmp_path, [cb], limit_val_batches=1).fit(make_module_cls()(), train, val)
    assert cb.probes is not None and cb.probes["image"].shape[0] == 4
    (event,) = image_events(tb_dir(tmp_path))["gradcam/backbone/overlay"]
    # one row of the four probes (160 px tiles, 2 px padding), no empty tiles
    assert (event.width, event.height) == (4 * 160 + 5 * 2, 160 + 2 * 2)
    assert "gradcam/backbone/pointing_game" in scalar_events(tb_dir(tmp_path))


def test_val_check_interval_fraction_and_validate_after_fit(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone", log_guided_gradcam=False)
    train, val = loaders()
    trainer = make_trainer(tmp_path, [cb], max_epochs=1, val_check_interval=0.5,
                           num_sanity_val_steps=0)  # fmt: skip
    model = make_module_cls()()
    trainer.fit(model, train, val)
    trainer.validate(model, val)  # after fit: logs again, at the last step, with the weights
    events = image_events(tb_dir(tmp_path))["gradcam/backbone/overlay"]
    assert _steps(events) == [2, 4, 4]
    want = lc.explain(model.eval(), cb.probes["image"], layer="backbone")
    torch.testing.assert_close(cb.last_explanation.cams["gradcam"]["backbone"],
                               want.cams["gradcam"]["backbone"])


def test_16_mixed_precision(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone")
    train, val = loaders()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # on CPU Lightning runs "16-mixed" as bf16 and says so
        trainer = make_trainer(tmp_path, [cb], precision="16-mixed")
    trainer.fit(make_module_cls()(), train, val)
    assert "gradcam/backbone/overlay" in image_events(tb_dir(tmp_path))
    assert cb.last_explanation.cams["gradcam"]["backbone"].dtype == torch.float32


def test_bf16_true_precision(tmp_path: Any) -> None:
    """Half-precision weights: the first-batch check and the maps use the trainer's precision."""
    cb = lc.GradCAMCallback(layer="backbone", metrics=["pointing_game", "average_drop"])
    train, val = loaders()
    trainer = make_trainer(tmp_path, [cb], precision="bf16-true")
    trainer.fit(make_module_cls()(), train, val)
    assert "gradcam/backbone/overlay" in image_events(tb_dir(tmp_path))
    assert cb.last_explanation.cams["gradcam"]["backbone"].dtype == torch.float32


def test_several_loggers_tensorboard_and_csv(tmp_path: Any) -> None:
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    cb = lc.GradCAMPlusPlusCallback(layer="backbone")
    train, val = loaders()
    loggers = [TensorBoardLogger(str(tmp_path), name="tb", version=0),
               CSVLogger(str(tmp_path), name="csv", version=0)]  # fmt: skip
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        make_trainer(tmp_path, [cb], logger=loggers).fit(make_module_cls()(), train, val)
    assert not [w for w in rec if "GradCAMPlusPlusCallback" in str(w.message)]
    assert "gradcam++/backbone/overlay" in image_events(tb_dir(tmp_path))
    assert "gradcam++/backbone/pointing_game" in scalar_events(tb_dir(tmp_path))
    csv = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text()
    assert "gradcam++/backbone/pointing_game" in csv
    assert not list(tmp_path.rglob("*.png"))  # TensorBoard took the pictures


def test_csv_logger_pngs_said_once(tmp_path: Any) -> None:
    from pytorch_lightning.loggers import CSVLogger

    cb = lc.GradCAMCallback(layer="backbone", log_guided_gradcam=False)
    train, val = loaders()
    logger = CSVLogger(str(tmp_path), name="csv", version=0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        make_trainer(tmp_path, [cb], logger=logger, max_epochs=2).fit(
            make_module_cls()(), train, val
        )
    mine = [str(w.message) for w in rec if "GradCAMCallback" in str(w.message)]
    assert len(mine) == 1 and "no logger takes images (CSVLogger)" in mine[0]
    pngs = sorted((tmp_path / "csv" / "version_0" / "cam_images").rglob("step_*.png"))
    assert [p.name for p in pngs] == ["step_0000004.png", "step_0000008.png"]
    assert viz.load_image(pngs[0]).shape[2] == 3


def test_non_finite_probe_is_marked_and_left_out_of_the_scalars(tmp_path: Any) -> None:
    """A probe with a NaN pixel has NaN maps (engine): the run goes on, the scalars are over the
    other probes, and its tiles say so instead of showing an empty map as "no evidence"."""
    from torch.utils.data import DataLoader

    from lightning_cam.callbacks import render
    from tests.callbacks.helpers import BlobData

    data = BlobData(8, seed=1)
    data.items[1][0][0, 3, 3] = float("nan")
    val = DataLoader(data, batch_size=8)
    cb = lc.GradCAMCallback(layer="backbone", num_samples=4)
    trainer = make_trainer(tmp_path, [cb])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.validate(make_module_cls()(), val)
    result = cb.last_explanation
    assert result is not None and result.nonfinite is not None
    assert result.nonfinite.tolist() == [False, True, False, False]
    scalars = scalar_events(tb_dir(tmp_path))
    pg = scalars["gradcam/backbone/pointing_game"][-1].value
    assert 0.0 <= pg <= 1.0
    # the energy pointing game is the mean over the three finite probes, recomputed here
    from lightning_cam import metrics as M

    finite = [0, 2, 3]
    maps = result.cams["gradcam"]["backbone"][finite].float().cpu()
    masks = torch.stack([data.items[i][2] for i in finite])
    want = float(M.energy_pointing_game(maps, masks=masks).mean())
    got = scalars["gradcam/backbone/energy_pointing_game"][-1].value
    assert got == pytest.approx(want, abs=1e-5) and 0.0 < want <= 1.0
    labels = render.tile_labels(result, None, 4, None, False)
    assert labels[1].startswith("NON-FINITE") and not labels[0].startswith("NON-FINITE")
