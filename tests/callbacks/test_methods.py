"""Every kind of registered method through ``CAMCallback`` with a real Trainer and TensorBoard."""

from __future__ import annotations

import os
from typing import Any

import pytest
import pytorch_lightning as pl

import lightning_cam as lc
from tests.callbacks.helpers import image_events, loaders, make_module_cls, scalar_events


def test_cam_callback_logs_gradient_activation_and_perturbation_methods(tmp_path: Any) -> None:
    methods = ["hirescam", "layercam", "eigencam", "cam", "scorecam", "ablationcam",
               "smoothgradcam++"]
    cb = lc.CAMCallback(methods=methods, layer="backbone", num_samples=4,
                        log_guided_gradcam=True, metrics=["pointing_game"],
                        metrics_num_samples=8)
    train, val = loaders()
    trainer = pl.Trainer(
        default_root_dir=str(tmp_path), callbacks=[cb], accelerator="cpu", devices=1,
        max_epochs=1, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, deterministic=True,
        logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="tb", version=0),
    )
    trainer.fit(make_module_cls()(), train, val)
    tb = os.path.join(str(tmp_path), "tb", "version_0")
    images = image_events(tb)
    for m in methods:
        assert f"{m}/backbone/overlay" in images, sorted(images)
        assert f"{m}/backbone/guided_gradcam" in images, sorted(images)
    scalars = scalar_events(tb)
    assert all(f"{m}/backbone/pointing_game" in scalars for m in methods), sorted(scalars)


def _max_pool_module_cls() -> type:
    """The tiny module with a global max-pool head: not GAP + linear, so CAM cannot explain it."""

    class MaxPoolHead(make_module_cls()):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.steps = 0

        def forward(self, x: Any) -> Any:
            return self.head(self.backbone(x).amax(dim=(2, 3)))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.steps += 1
            return super().training_step(batch, batch_idx)

    return MaxPoolHead


@pytest.mark.parametrize("sanity_steps", [0, 2])
@pytest.mark.parametrize("methods", [["gradcam", "cam"], ["scorecam", "cam", "layercam"]])
def test_every_method_is_checked_at_the_first_batch(tmp_path: Any, methods: list[str],
                                                     sanity_steps: int) -> None:
    from lightning_cam._compat import MisconfigurationException
    from tests.callbacks.helpers import make_trainer

    module = _max_pool_module_cls()()
    cb = lc.CAMCallback(methods=methods, layer="backbone", num_samples=2)
    train, val = loaders()
    trainer = make_trainer(tmp_path, [cb], logger=False, num_sanity_val_steps=sanity_steps)
    with pytest.raises(MisconfigurationException) as info:
        trainer.fit(module, train, val)
    message = str(info.value)
    assert f"methods={methods!r} is invalid" in message and "'cam' cannot explain" in message
    assert "GAP" in message or "linear" in message, message
    assert "Drop 'cam' from methods" in message and "gradcam" in message
    assert module.steps == 0  # refused before the first training step ran
    assert trainer.current_epoch == 0 and trainer.global_step == 0
    assert all(not m._forward_hooks and not m._backward_hooks for m in module.modules())


def test_perturbation_methods_are_checked_on_one_probe_image(tmp_path: Any,
                                                             monkeypatch: Any) -> None:
    from lightning_cam.callbacks import classification
    from tests.callbacks.helpers import make_trainer

    sizes: list[tuple[tuple[str, ...], int]] = []
    original = classification.ClassificationTask._probe_explain

    def spy(self: Any, trainer: Any, pl_module: Any, xf: Any, *args: Any) -> Any:
        sizes.append((tuple(args[2]), int(xf.shape[0])))
        return original(self, trainer, pl_module, xf, *args)

    monkeypatch.setattr(classification.ClassificationTask, "_probe_explain", spy)
    cb = lc.CAMCallback(methods=["scorecam", "gradcam", "ablationcam", "eigencam"],
                        layer="backbone", num_samples=2)
    train, val = loaders()
    trainer = make_trainer(tmp_path, [cb], logger=False, limit_train_batches=1,
                           limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(make_module_cls()(), train, val)
    assert sizes == [(("gradcam", "eigencam"), 2), (("scorecam", "ablationcam"), 1)]
