"""CAMCallback(target="labels"): multi-label (sigmoid) heads validated on multi-hot labels."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import lightning_cam as lc
from lightning_cam._compat import MisconfigurationException
from tests.callbacks.helpers import decode, image_events, make_trainer, scalar_events, tb_dir

NAMES = ["cat", "dog", "traffic light", "sky/blue"]
SIZE = 16


def _module_cls() -> type:
    import pytorch_lightning as pl

    class MultiLabelNet(pl.LightningModule):
        """A public-style multi-label classifier: sigmoid head, BCEWithLogitsLoss, dict
        batches ``{"image": ..., "labels": multi-hot}``."""

        def __init__(self, num_labels: int = 4, uint8: bool = False) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.backbone = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
            )
            self.head = nn.Linear(8, num_labels)
            self.loss = nn.BCEWithLogitsLoss()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.hparams.uint8:
                x = x.float() / 255
            return self.head(self.backbone(x).mean(dim=(2, 3)))

        def _loss(self, batch: Any) -> torch.Tensor:
            logits, y = self(batch["image"]), batch["labels"]
            if y.dim() == 1:  # class ids: the single-label module one would refuse to explain
                return nn.functional.cross_entropy(logits, y)
            return self.loss(logits, y.float())

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self._loss(batch)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", self._loss(batch))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return MultiLabelNet


class Squares(Dataset):
    """Label ``k`` present: a bright square in quadrant ``k``; multi-hot labels ``(4,)``,
    per-label masks ``(4, H, W)``. Sample 0 has no label, sample 1 has labels 0, 2, 3."""

    def __init__(self, n: int = 16, uint8: bool = False, labels: str = "multi-hot") -> None:
        g = torch.Generator().manual_seed(0)
        self.items = []
        for i in range(n):
            present = (torch.rand(4, generator=g) < 0.5).float()
            present = torch.zeros(4) if i == 0 else present
            present = torch.tensor([1.0, 0.0, 1.0, 1.0]) if i == 1 else present
            img = torch.rand(3, SIZE, SIZE, generator=g) * 0.2
            masks = torch.zeros(4, SIZE, SIZE, dtype=torch.bool)
            for k in range(4):
                r, c = 8 * (k // 2) + 1, 8 * (k % 2) + 1
                masks[k, r : r + 5, c : c + 5] = bool(present[k])
            img[:, masks.any(0)] += 0.8
            self.items.append((img, present, masks))
        self.uint8, self.labels = uint8, labels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        img, present, masks = self.items[i]
        image = (img.clamp(0, 1) * 255).to(torch.uint8) if self.uint8 else img
        labels = {
            "multi-hot": present, "int": present.long(), "class-ids": present.argmax(),
            "narrow": present[:3], "soft": present * 0.5, "one": present[:1],
        }[self.labels]  # fmt: skip
        return {"image": image, "labels": labels, "mask": masks}


def _loaders(**kw: Any) -> tuple[DataLoader, DataLoader]:
    return DataLoader(Squares(16, **kw), batch_size=8), DataLoader(Squares(8, **kw), batch_size=8)


def _expected_grid(module: Any, cb: Any, kind: str) -> tuple[np.ndarray, Any]:
    """The grid drawn independently from explain_multilabel's maps of the probes."""
    from lightning_cam.callbacks.render import display_images, resize_tile
    from lightning_cam.tools import viz

    probes = cb.probes
    n = cb.options.num_samples
    images = probes["image"][:n].float()
    out = lc.explain_multilabel(module, images, "backbone", methods=["gradcam"],
                                labels=probes["label"][:n])  # fmt: skip
    with torch.no_grad():
        probs = torch.sigmoid(module(images))
    base = display_images(probes["image"][:n], cb.options)
    tiles = []
    for i, k in out.pairs():
        cam = out.cam(i, k)
        tile = viz.colorize(cam) if kind == "heatmap" else viz.overlay(base[i], cam, alpha=0.5)
        tile = resize_tile(tile, cb.options.tile_size)
        tiles.append(viz.draw_label(tile, f"#{i} {NAMES[k]} {float(probs[i, k]):.2f}"))
    return viz.make_grid(tiles, ncol=min(len(tiles), 4)), out


@pytest.mark.parametrize("uint8", [False, True])
def test_a_tile_per_true_label_with_explain_multilabels_maps(tmp_path: Any, uint8: bool) -> None:
    torch.manual_seed(0)
    module = _module_cls()(uint8=uint8)
    cb = lc.CAMCallback(layer="backbone", target="labels", label_key="labels", num_samples=4,
                        log_heatmap=True, class_names=NAMES, tile_size=32)  # fmt: skip
    train, val = _loaders(uint8=uint8)
    trainer = make_trainer(tmp_path, [cb], limit_train_batches=2, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match=r"1 of the 4 probe images have no true label"):
        trainer.fit(module, train, val)
    labels = cb.probes["label"][:4]
    positives = int(labels.sum())
    assert positives >= 5 and int(labels[0].sum()) == 0  # image 0: no tile
    pairs = [tuple(p) for p in labels.nonzero().tolist()]
    events = image_events(tb_dir(tmp_path))
    assert {"gradcam/backbone/heatmap", "gradcam/backbone/overlay",
            "gradcam/backbone/guided_gradcam"} <= set(events)  # fmt: skip
    for kind in ("heatmap", "overlay"):
        expected, out = _expected_grid(module, cb, kind)
        picture = decode(events[f"gradcam/backbone/{kind}"][-1])
        assert len(out.pairs()) == positives
        shape = (math.ceil(positives / 4) * 34 + 2, min(positives, 4) * 34 + 2, 3)
        assert picture.shape == shape == expected.shape
        assert np.abs(picture.astype(int) - expected.astype(int)).max() <= 1
    # the computed maps themselves, pair by pair (numbers)
    result = cb.last_result
    assert result.pairs() == out.pairs() == pairs and (1, 0) in pairs and (1, 1) not in pairs
    for i, k in out.pairs():
        torch.testing.assert_close(result.cam(i, k), out.cam(i, k), atol=1e-5, rtol=0)
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks
                   for m in module.modules())  # fmt: skip
    assert all(p.requires_grad for p in module.parameters())


def test_metrics_per_pair_mean_and_per_label(tmp_path: Any) -> None:
    from lightning_cam import metrics as M

    torch.manual_seed(0)
    module = _module_cls()()
    cb = lc.CAMCallback(layer="backbone", target="labels", label_key="labels", num_samples=2,
                        metrics_num_samples=8, class_names=NAMES, log_guided_gradcam=False,
                        metrics=["pointing_game", "energy_pointing_game"])  # fmt: skip
    train, val = _loaders()
    trainer = make_trainer(tmp_path, [cb], limit_train_batches=2, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="no true label"):
        trainer.fit(module, train, val)
    scalars = {k: v[-1].value for k, v in scalar_events(tb_dir(tmp_path)).items()}
    probes = cb.probes
    out = lc.explain_multilabel(module, probes["image"], "backbone", methods=["gradcam"],
                                labels=probes["label"])  # fmt: skip
    rows, labels = out.rows, out.labels
    maps = out.explanation.cams["gradcam"]["backbone"]
    masks = probes["mask"][rows, labels]  # each pair's own label's mask
    total = maps.flatten(1).sum(1)
    energy = torch.where(total > 0, (maps * masks).flatten(1).sum(1) / total, 0.0)  # by hand
    tol = M.pointing_tolerance(None, probes["image"].shape, rank=2)
    hits = M.image_metrics(["pointing_game"], None, None, maps, None, masks, None,
                           tolerance=tol)["pointing_game"]  # fmt: skip
    tag = "gradcam/backbone"
    assert scalars[f"{tag}/energy_pointing_game"] == pytest.approx(float(energy.mean()), abs=1e-5)
    assert scalars[f"{tag}/pointing_game"] == pytest.approx(float(hits.float().mean()), abs=1e-6)
    for k in torch.unique(labels).tolist():
        name = NAMES[k].replace(" ", "_").replace("/", "_")
        assert scalars[f"{tag}/energy_pointing_game/label_{name}"] == pytest.approx(
            float(energy[labels == k].mean()), abs=1e-5
        )
        assert scalars[f"{tag}/pointing_game/label_{name}"] == pytest.approx(
            float(hits[labels == k].float().mean()), abs=1e-6
        )
    assert f"{tag}/pointing_game/label_sky_blue" in scalars  # "/" kept out of the tag
    assert not any(m._forward_hooks or m._backward_hooks for m in module.modules())


def _refused(tmp_path: Any, module: Any, labels: str, match: str, sanity: int = 2,
             **kw: Any) -> None:  # fmt: skip
    cb = lc.CAMCallback(layer="backbone", target="labels", label_key="labels", num_samples=2,
                        **kw)  # fmt: skip
    trainer = make_trainer(tmp_path, [cb], logger=False, limit_train_batches=2,
                           num_sanity_val_steps=sanity)  # fmt: skip
    with pytest.raises(MisconfigurationException, match=match):
        trainer.fit(module, *_loaders(labels=labels))
    assert trainer.global_step == 0  # refused before training time is spent
    assert not any(m._forward_hooks or m._backward_hooks for m in module.modules())


@pytest.mark.parametrize(
    ("num_labels", "labels", "sanity", "match"),
    [
        (1, "one", 2, r"single-logit binary head\). Use target='label'"),
        (4, "class-ids", 2, r"class ids \(or a binary head's 0/1 labels\)\. Use target='label'"),
        (4, "class-ids", 0, r"are \(8,\) int64: class ids"),  # a training batch's, no sanity
        (4, "narrow", 0, r"\(8, 3\) float32 for a head of 4 logits: give multi-hot labels"),
        (4, "soft", 2, r"0/1 multi-hot labels; .* holding \[0\.0, 0\.5\]"),
    ],
)
def test_refusals_at_the_first_batch(
    tmp_path: Any, num_labels: int, labels: str, sanity: int, match: str
) -> None:
    _refused(tmp_path, _module_cls()(num_labels=num_labels), labels, match, sanity)


def test_no_labels_in_the_batches_is_refused(tmp_path: Any) -> None:
    cb = lc.CAMCallback(layer="backbone", target="labels", num_samples=2)  # label_key "label"
    trainer = make_trainer(tmp_path, [cb], logger=False, limit_train_batches=1)
    with pytest.raises(MisconfigurationException, match="carry no labels .*label_key='label'"):
        trainer.fit(_module_cls()(), *_loaders())
    assert trainer.global_step == 0


def test_softmax_metrics_and_the_writer_refuse_labels(tmp_path: Any) -> None:
    with pytest.raises(MisconfigurationException, match=r"metrics=\['average_drop'\] is invalid"):
        lc.CAMCallback(target="labels", metrics=["average_drop"])
    lc.CAMCallback(target="labels", metrics=["deletion_auc_logit"])  # the label's logit: fine
    with pytest.raises(MisconfigurationException, match="target='labels' is invalid"):
        lc.CAMWriter(str(tmp_path / "w"), target="labels")
    for target in ("pred", "predicted", "label", 2):  # the other targets are unchanged
        assert lc.CAMCallback(target=target).options.target == (
            "pred" if target == "predicted" else target
        )


def test_integer_multi_hot_labels_and_no_label_at_all(tmp_path: Any) -> None:
    """Integer 0/1 labels work like float ones; probes without any label log no picture."""
    torch.manual_seed(0)
    module = _module_cls()()
    cb = lc.CAMCallback(layer="backbone", target="labels", label_key="labels", num_samples=1,
                        metrics=["energy_pointing_game"])  # fmt: skip
    trainer = make_trainer(tmp_path, [cb], limit_train_batches=1, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match=r"1 of the 1 probe images have no true label"):
        trainer.fit(module, *_loaders(labels="int"))
    assert cb.probes["label"].dtype == torch.int64
    assert cb.last_result.pairs() == []
    events = image_events(tb_dir(tmp_path))
    assert not any(tag.startswith("gradcam/") for tag in events)
    assert not math.isnan(trainer.callback_metrics["val_loss"])


def test_a_tuple_output_is_read_and_layers_keep_their_names(tmp_path: Any) -> None:
    """``(logits, features)`` outputs: the logits are read as for the other targets; the tags
    and maps name the module's own layers."""
    base = _module_cls()

    class TupleNet(base):  # type: ignore[misc, valid-type]
        def forward(self, x: torch.Tensor) -> Any:
            feats = self.backbone(x)
            return self.head(feats.mean(dim=(2, 3))), feats

        def _loss(self, batch: Any) -> torch.Tensor:
            return self.loss(self(batch["image"])[0], batch["labels"].float())

    class First(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)[0]

    torch.manual_seed(0)
    module = TupleNet()
    cb = lc.CAMCallback(layer="backbone", target="labels", label_key="labels", num_samples=4,
                        log_guided_gradcam=False)  # fmt: skip
    trainer = make_trainer(tmp_path, [cb], limit_train_batches=1, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="no true label"):
        trainer.fit(module, *_loaders())
    assert "gradcam/backbone/overlay" in image_events(tb_dir(tmp_path))
    probes = cb.probes
    out = lc.explain_multilabel(First(module), probes["image"], "net.backbone",
                                methods=["gradcam"], labels=probes["label"])  # fmt: skip
    assert cb.last_result.pairs() == out.pairs() and out.pairs()
    for i, k in out.pairs():
        torch.testing.assert_close(cb.last_result.cam(i, k, layer="backbone"), out.cam(i, k),
                                   atol=1e-5, rtol=0)  # fmt: skip
