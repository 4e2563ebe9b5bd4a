"""The callbacks on LightningModules written the way public projects write them, each with a real
Trainer: a single-logit binary head trained with ``binary_cross_entropy_with_logits`` on float
labels (Lightning's fine-tuning example), and a ``log_softmax`` head trained with ``nll_loss``
(the CIFAR-10 tutorial)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import lightning_cam as lc
from lightning_cam.callbacks import render
from lightning_cam.engine import OutputWarning
from lightning_cam.engine.targets import BinaryTarget
from tests.callbacks.helpers import BlobData, image_events, make_trainer, tb_dir


class Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class HeadOnBackbone(pl.LightningModule):
    """``Backbone`` and a linear head of ``outputs`` trained on ``loss`` (a class attribute):
    the shape of the public fine-tuning examples."""

    outputs, lr = 1, 0.1
    loss = staticmethod(F.binary_cross_entropy_with_logits)

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.fc = nn.Linear(8, self.outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.loss(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", self.loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class BinaryClassifier(HeadOnBackbone):
    """Lightning's fine-tuning example, shrunk: ``fc = Linear(., 1)``, BCE-with-logits on float
    labels ``(B, 1)``."""


class LabelledBlobs(Dataset):
    """``(image, label(quadrant))`` of ``BlobData`` (the square's quadrant, 0-3)."""

    def __init__(self, n: int, seed: int, label: Callable[[int], torch.Tensor]) -> None:
        self.data = BlobData(n, seed=seed, dict_batches=False)
        self.label = label

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        img, q = self.data[i]
        return img, self.label(int(q))


class BinaryBlobs(LabelledBlobs):
    """``(image, float label (1,))``: 1.0 where the square is in the first quadrant."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n, seed, lambda q: torch.tensor([float(q == 0)]))


def binary_loaders() -> tuple[DataLoader, DataLoader]:
    return (DataLoader(BinaryBlobs(16, 0), batch_size=8),
            DataLoader(BinaryBlobs(8, 1), batch_size=8))


@pytest.mark.parametrize("target", ["pred", "label"])
def test_binary_head_with_float_labels(tmp_path: Any, target: str) -> None:
    cb = lc.GradCAMCallback(layer="backbone.features", target=target,
                            metrics=["pointing_game", "average_drop"], num_samples=4)
    model = BinaryClassifier()
    make_trainer(tmp_path, [cb]).fit(model, *binary_loaders())
    assert "gradcam/backbone.features/overlay" in image_events(tb_dir(tmp_path))
    result, probes = cb.last_explanation, cb.probes
    assert result is not None and probes is not None
    z = model.eval()(probes["image"]).detach()[:, 0]
    want_ids = (z > 0).long() if target == "pred" else probes["label"][:, 0].long()
    assert result.class_ids.tolist() == want_ids.tolist()
    # the score explained is the logit for class 1, minus it for class 0 (never a softmax of 1)
    torch.testing.assert_close(result.scores, torch.where(want_ids == 1, z, -z))
    for cls in (0, 1):
        rows = want_ids == cls
        if rows.any():
            want = lc.explain(model, probes["image"][rows], layer="backbone.features",
                              target=BinaryTarget(negative=cls == 0))
            torch.testing.assert_close(result.cams["gradcam"]["backbone.features"][rows],
                                       want.cams["gradcam"]["backbone.features"])
    # captions: sigmoid probabilities of the predicted decision, the true 0/1 label
    caps = render.tile_labels(result, probes["label"], 4, None, target != "pred")
    for i, cap in enumerate(caps):
        p = float(torch.sigmoid(z[i]))
        pred, prob = (1, p) if z[i] > 0 else (0, 1 - p)
        assert cap.startswith(f"pred {pred} {prob:.2f} | true {int(probes['label'][i, 0])}")


def test_binary_head_soft_labels_are_refused_before_training(tmp_path: Any) -> None:
    class Soft(BinaryBlobs):
        def __getitem__(self, i: int) -> Any:
            img, y = super().__getitem__(i)
            return img, y * 0.9 + 0.05  # label smoothing: not class ids

    cb = lc.GradCAMCallback(layer="backbone.features", target="label")
    loader = DataLoader(Soft(8, 0), batch_size=8)
    with pytest.raises(Exception, match=r"0/1 labels \(B,\) or \(B, 1\)"):
        make_trainer(tmp_path, [cb]).fit(BinaryClassifier(), loader, loader)


class LogSoftmaxNet(pl.LightningModule):
    """The CIFAR-10 tutorial's habit: ``forward`` ends in ``log_softmax``, trained with NLL."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc(self.backbone(x)), dim=1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.nll_loss(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.nll_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_log_softmax_head_is_said_once_and_read_right(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone.features", num_samples=4, every_n_epochs=1)
    model = LogSoftmaxNet()
    train = DataLoader(BlobData(16, seed=0, dict_batches=False), batch_size=8)
    val = DataLoader(BlobData(8, seed=1, dict_batches=False), batch_size=8)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        make_trainer(tmp_path, [cb], max_epochs=2).fit(model, train, val)
    said = [w for w in seen if issubclass(w.category, OutputWarning)]
    assert len(said) == 1 and "log-probabilities" in str(said[0].message)
    result, probes = cb.last_explanation, cb.probes
    assert result is not None and probes is not None
    logp = model.eval()(probes["image"]).detach()
    # the log-probability of the predicted class is what is differentiated, as the warning says
    torch.testing.assert_close(result.scores, logp.max(dim=1).values)
    caps = render.tile_labels(result, probes["label"], 4, None, False)
    for i, cap in enumerate(caps):
        c = int(logp[i].argmax())
        assert cap.startswith(f"pred {c} {float(logp[i, c].exp()):.2f}")  # not softmax(log p)


class SigmoidClassifier(BinaryClassifier):
    """``torch.sigmoid`` at the end of ``forward``, trained with ``BCELoss``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(self.backbone(x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.binary_cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.binary_cross_entropy(self(x), y))


def test_sigmoid_head_captions_show_its_probability(tmp_path: Any) -> None:
    cb = lc.GradCAMCallback(layer="backbone.features", num_samples=4, metrics=["average_drop"])
    model = SigmoidClassifier()
    with pytest.warns(OutputWarning, match="sigmoid probabilities"):
        make_trainer(tmp_path, [cb]).fit(model, *binary_loaders())
    result, probes = cb.last_explanation, cb.probes
    assert result is not None and probes is not None
    p = model.eval()(probes["image"]).detach()[:, 0]
    assert result.class_ids.tolist() == (p > 0.5).long().tolist()
    caps = render.tile_labels(result, probes["label"], 4, None, False)
    for i, cap in enumerate(caps):
        pred, prob = (1, float(p[i])) if p[i] > 0.5 else (0, 1 - float(p[i]))
        assert cap.startswith(f"pred {pred} {prob:.2f}")  # p, never sigmoid(p) >= 0.5
