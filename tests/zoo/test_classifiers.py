"""Tests of lightning_cam.zoo.classifiers: network names, weight files, torchvision DEFAULT weights.

Nothing downloads: weights are made here (``weights=None`` models saved to tmp), and the
DEFAULT-weights path runs against an empty or prepared torch hub cache with the download
function replaced by one that fails.
"""

from __future__ import annotations

import os
import urllib.error

import pytest
import torch
import torchvision

from lightning_cam import zoo


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on 2 shared cores, OpenMP's spinning threads make two slower than
    one by an order of magnitude when another process is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """An empty torch hub cache and a download that fails as it does without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    calls = []

    def no_network(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return calls


def _save(obj, path) -> str:
    torch.save(obj, path)
    return str(path)


def _same_output(a: torch.nn.Module, b: torch.nn.Module, size: int = 64) -> bool:
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "arch"),
    [
        ("vgg16", "vgg16"),
        ("VGG19", "vgg19"),
        ("resnet50", "resnet50"),
        ("resnet101", "resnet101"),
        ("densenet121", "densenet121"),
        ("inception_v3", "inception_v3"),
        ("inception-v3", "inception_v3"),
        ("mobilenet_v2", "mobilenet_v2"),
        ("shufflenet_v2", "shufflenet_v2_x1_0"),
        ("resnet", "resnet50"),
        ("efficientnet_b0", "efficientnet_b0"),
    ],
)
def test_resolve_network(name: str, arch: str) -> None:
    assert zoo.resolve_network(name) == arch


def test_every_seed_network_and_torchvision_classifier_is_accepted() -> None:
    names = zoo.network_names()
    assert names[: len(zoo.SEED_NETWORKS)] == list(zoo.SEED_NETWORKS)
    for name in torchvision.models.list_models(module=torchvision.models):
        assert zoo.resolve_network(name) == name


def test_unknown_network_lists_close_matches_and_valid_names() -> None:
    with pytest.raises(zoo.UnknownNetworkError) as info:
        zoo.resolve_network("resnet5")
    msg = str(info.value)
    assert "'resnet5'" in msg and "Did you mean: resnet50" in msg
    assert "shufflenet_v2" in msg and "squeezenet1_0" in msg  # seed list and torchvision names
    assert isinstance(info.value, ValueError)


def test_input_size_and_device() -> None:
    assert zoo.default_input_size("inception_v3") == 299
    assert zoo.default_input_size("resnet50") == 224
    assert zoo.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="Invalid device 'gpu0'"):
        zoo.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            zoo.resolve_device("cuda")


# ----------------------------------------------------------------------------- weight files


def test_state_dict_file_loads_exactly(tmp_path) -> None:
    net = torchvision.models.resnet18(weights=None)
    path = _save(net.state_dict(), tmp_path / "r18.pth")
    model, meta = zoo.build_classifier("resnet18", path)
    assert _same_output(net, model)
    assert not model.training
    assert meta.input_size == 224 and meta.num_classes == 1000
    assert meta.mean == zoo.IMAGENET_MEAN and meta.std == zoo.IMAGENET_STD
    # A 1000-class torchvision head: ImageNet's categories.
    assert meta.categories is not None and meta.categories[0] == "tench"
    assert meta.class_name(1) == "goldfish" and meta.class_name(5000) is None
    assert meta.weights == path


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "model_state_dict"])
def test_wrapped_and_prefixed_state_dicts(tmp_path, wrapper: str) -> None:
    net = torchvision.models.mobilenet_v2(weights=None, num_classes=3)
    sd = {f"module._orig_mod.{k}": v for k, v in net.state_dict().items()}
    path = _save({wrapper: sd, "epoch": 3}, tmp_path / "w.pt")
    model, meta = zoo.build_classifier("mobilenet_v2", path)
    assert _same_output(net, model)
    # The head size comes from the file; no ImageNet names for a 3-class head.
    assert meta.num_classes == 3 and meta.categories is None


def test_lightning_module_prefix_is_stripped(tmp_path) -> None:
    """A checkpoint of some other LightningModule holding the network as ``self.model``."""
    net = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=7)
    ckpt = {
        "pytorch-lightning_version": "2.6.0",
        "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
        "hyper_parameters": {"lr": 0.1},
    }
    model, meta = zoo.build_classifier("shufflenet_v2_x0_5", _save(ckpt, tmp_path / "x.ckpt"))
    assert _same_output(net, model)
    assert meta.num_classes == 7


def test_inception_and_googlenet_without_aux_heads(tmp_path) -> None:
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    model, _ = zoo.build_classifier("googlenet", _save(net.state_dict(), tmp_path / "g.pth"))
    assert model.aux1 is None and _same_output(net, model)


def test_missing_weight_file(tmp_path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(zoo.WeightFileNotFoundError, match="Weight file not found") as info:
        zoo.build_classifier("resnet18", path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_unreadable_weight_files(tmp_path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(zoo.WeightFileError, match="not a PyTorch file"):
        zoo.build_classifier("resnet18", text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(zoo.WeightFileError, match="not a PyTorch file"):
        zoo.build_classifier("resnet18", empty)
    with pytest.raises(zoo.WeightFileError, match="is a directory"):
        zoo.build_classifier("resnet18", tmp_path)
    no_tensors = _save({"epoch": 1, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(zoo.WeightFileError, match="No state_dict found.*'epoch'"):
        zoo.build_classifier("resnet18", no_tensors)


def test_whole_pickled_model_is_refused_with_advice(tmp_path) -> None:
    path = _save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), tmp_path / "model.pt")
    with pytest.raises(zoo.WeightFileError, match=r"torch.save\(model.state_dict\(\), path\)"):
        zoo.build_classifier("resnet18", path)


def test_state_dict_of_another_architecture(tmp_path) -> None:
    path = _save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(zoo.StateDictMismatchError) as info:
        zoo.build_classifier("resnet34", path)
    err = info.value
    assert err.missing and not err.unexpected
    msg = str(err)
    assert f"{len(err.missing)} missing key(s): layer1.2.conv1.weight" in msg
    assert "resnet34" in msg and str(path) in msg and "\n" not in msg


def test_unexpected_keys_and_shape_mismatches_are_listed(tmp_path) -> None:
    sd = torchvision.models.resnet18(weights=None).state_dict()
    sd["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    sd["extra.weight"] = torch.zeros(1)
    del sd["fc.bias"]
    with pytest.raises(zoo.StateDictMismatchError) as info:
        zoo.build_classifier("resnet18", _save(sd, tmp_path / "w.pth"))
    err = info.value
    assert err.missing == ["fc.bias"] and err.unexpected == ["extra.weight"]
    assert err.mismatched == [("conv1.weight", (64, 3, 5, 5), (64, 3, 7, 7))]
    msg = str(err)
    assert "1 missing key(s): fc.bias" in msg
    assert "1 unexpected key(s): extra.weight" in msg
    assert "conv1.weight (file [64, 3, 5, 5] vs network [64, 3, 7, 7])" in msg


def test_old_state_dict_without_num_batches_tracked(tmp_path) -> None:
    net = torchvision.models.resnet18(weights=None)
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    model, _ = zoo.build_classifier("resnet18", _save(sd, tmp_path / "old.pth"))
    assert _same_output(net, model)
    assert int(model.bn1.num_batches_tracked) == 0


# ----------------------------------------------------------------------------- DEFAULT weights


def test_default_weights_offline_and_not_cached(offline) -> None:
    with pytest.raises(zoo.PretrainedWeightsUnavailableError) as info:
        zoo.build_classifier("shufflenet_v2_x0_5")
    msg = str(info.value)
    assert "--weight-path FILE" in msg and "weight_path=FILE" in msg
    assert "not in the local torch cache" in msg and "shufflenetv2_x0.5-f707e7126e.pth" in msg
    assert "Temporary failure in name resolution" in msg
    assert offline  # the real torchvision path ran up to the download


def test_default_weights_from_the_local_cache(offline) -> None:
    arch = "shufflenet_v2_x0_5"
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    net = torchvision.models.shufflenet_v2_x0_5(weights=None)
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(cache)
    torch.save(net.state_dict(), os.path.join(cache, os.path.basename(weights.url)))
    model, meta = zoo.build_classifier(arch)
    assert not offline  # found in the cache: no download attempted
    assert _same_output(net, model)
    assert meta.weights == f"torchvision:{weights}" and meta.categories[0] == "tench"


def test_default_weights_loader_is_replaceable(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(arch, weights):
        assert arch == "inception_v3" and "Inception_V3_Weights" in str(weights)
        return torchvision.models.inception_v3(weights=None, init_weights=False)

    monkeypatch.setattr(zoo.classifiers, "load_pretrained", fake)
    model, meta = zoo.build_classifier("inception_v3")
    assert meta.input_size == 299 and meta.num_classes == 1000 and not model.training

    def fails(arch, weights):
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(zoo.classifiers, "load_pretrained", fails)
    with pytest.raises(zoo.PretrainedWeightsUnavailableError, match="connection reset"):
        zoo.build_classifier("resnet18")
    with pytest.raises(ValueError, match="num_classes=10 does not fit"):
        zoo.build_classifier("resnet18", num_classes=10)


# ----------------------------------------------------------------------------- checkpoints


def _shapes_checkpoint(tmp_path, **hparams):
    from lightning_cam.models import ShapesClassifier

    model = ShapesClassifier(**hparams)
    ckpt = {
        "pytorch-lightning_version": "2.6.0",
        "state_dict": model.state_dict(),
        "hyper_parameters": {**dict(model.hparams), "_instantiator": "x.y"},
        "datamodule_hyper_parameters": {"image_size": 48},
    }
    return model, _save(ckpt, tmp_path / "shapes.ckpt")


def test_lightning_cam_checkpoint(tmp_path) -> None:
    names = ["circle", "square", "triangle", "star"]
    net, path = _shapes_checkpoint(tmp_path, class_names=names)
    assert zoo.checkpoint_backbone(path) == "simple"
    model, meta = zoo.build_classifier(None, path)
    assert _same_output(net, model, size=48)
    assert meta.arch == "ShapesClassifier" and meta.name == "simple"
    assert meta.categories == names and meta.num_classes == 4
    assert meta.input_size == 48  # the datamodule's image size
    assert meta.mean == (0.0, 0.0, 0.0) and meta.std == (1.0, 1.0, 1.0)  # normalises inside
    # Naming its backbone is fine; naming another network is an error.
    zoo.build_classifier("simple", path)
    with pytest.raises(zoo.WeightFileError, match="backbone 'simple'.*'resnet50' was requested"):
        zoo.build_classifier("resnet50", path)


def test_checkpoint_written_by_a_real_trainer(tmp_path) -> None:
    import pytorch_lightning as pl

    from lightning_cam.data import ShapesDataModule
    from lightning_cam.models import ShapesClassifier

    net = ShapesClassifier(class_names=["circle", "square", "triangle", "star"])
    dm = ShapesDataModule(num_train=8, num_val=4, num_test=4, batch_size=4, image_size=40)
    trainer = pl.Trainer(
        max_steps=1, limit_val_batches=0, accelerator="cpu", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(net, dm)
    trainer.save_checkpoint(tmp_path / "real.ckpt")
    model, meta = zoo.build_classifier(None, tmp_path / "real.ckpt")
    assert _same_output(net, model, size=40)
    assert meta.input_size == 40 and meta.categories == ["circle", "square", "triangle", "star"]


def test_plain_state_dict_needs_a_network_name(tmp_path) -> None:
    path = _save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r.pth")
    assert zoo.checkpoint_backbone(path) is None
    with pytest.raises(ValueError, match="give the network name"):
        zoo.build_classifier(None, path)
