"""The options, batch parser and metric names the callbacks and ``CAMWriter`` share."""

from __future__ import annotations

import ast
import inspect
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_cam as lc
from lightning_cam import metrics as M
from lightning_cam._compat import MisconfigurationException
from lightning_cam.callbacks import options as O
from lightning_cam.callbacks.batches import parse_batch
from lightning_cam.predict import CAMWriter
from lightning_cam.predict import evaluation as E
from tests.callbacks.helpers import loaders, make_module_cls, make_trainer
from tests.predict.conftest import loader, tiny_model, trainer


def _message(make: Any) -> str:
    with pytest.raises(MisconfigurationException) as info:
        make()
    return str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"methods": ["nope"]},
        {"methods": ["gradcam", "gradcamm"]},
        {"methods": []},
        {"metrics": ["accuracy"]},
        {"metrics": ["pointing"]},
        {"target": "best"},
        {"target": True},
        {"target": -1},
        {"pointing_game_tolerance": -1},
        {"pointing_game_tolerance": math.nan},
        {"pointing_game_tolerance": "5"},
        {"layer": 3},
        {"layer": []},
        {"image_key": 3},
        {"mask_key": 1.5},
    ],
)
def test_writer_and_callbacks_refuse_a_bad_option_with_the_same_message(kwargs: dict) -> None:
    from_callback = _message(lambda: lc.GradCAMCallback(**kwargs))
    from_writer = _message(lambda: CAMWriter("out", **kwargs))
    assert from_callback == from_writer
    assert from_callback.startswith(f"{next(iter(kwargs))}=")


@pytest.mark.parametrize(("arg", "value"), [("max_batch", 0), ("max_batch", True)])
def test_writer_int_options_use_the_shared_check(arg: str, value: Any) -> None:
    want = _message(lambda: O.check_int(arg, value, 1, optional=True))
    assert _message(lambda: CAMWriter("out", **{arg: value})) == want
    assert want == f"{arg}={value!r} is invalid: expected an int >= 1 or None."


@pytest.mark.parametrize("spelling", ["pred", "predicted"])
def test_both_spellings_of_the_predicted_target_in_the_callbacks(
    tmp_path: Any, spelling: str
) -> None:
    cb = lc.GradCAMCallback(layer="backbone", target=spelling, metrics=[])
    assert cb.target == "pred"  # one canonical value: the same state_key for both
    assert cb.state_key == lc.GradCAMCallback(layer="backbone", metrics=[]).state_key
    train, val = loaders()
    module = make_module_cls()()
    make_trainer(tmp_path, [cb]).fit(module, train, val)
    result = cb.last_explanation
    assert result is not None and cb.probes is not None
    logits = module.eval()(cb.probes["image"])
    assert result.class_ids.tolist() == logits.argmax(dim=1).tolist()


def _writer_classes(out: Path, **kwargs: Any) -> list[int]:
    import pandas as pd

    writer = CAMWriter(str(out), layer="backbone", metrics=["pointing_game"], **kwargs)
    trainer([writer]).predict(tiny_model(), loader(), return_predictions=False)
    df = pd.read_parquet(out / "manifest.parquet").sort_values("index")
    return [int(c) for c in df["explained_class"]]


def test_both_spellings_of_the_predicted_target_in_the_writer(tmp_path: Path) -> None:
    assert CAMWriter("out", target="pred").target == CAMWriter("out", target="predicted").target
    pred = _writer_classes(tmp_path / "a", target="pred")
    predicted = _writer_classes(tmp_path / "b", target="predicted")
    default = _writer_classes(tmp_path / "c")
    assert pred == predicted == default
    # a class id, as in the callbacks
    assert _writer_classes(tmp_path / "d", target=1) == [1] * len(pred)


def test_metric_names_are_one_list() -> None:
    names = M.METRIC_NAMES
    assert names == tuple(M.METRICS) and len(set(names)) == len(names)
    assert O.METRICS is names and lc.callbacks.METRICS is names
    assert E.METRIC_NAMES is names
    assert set(M.HIGHER_IS_BETTER) == set(names)
    assert set(M.LOCALISATION_METRICS) | set(M.FAITHFULNESS_METRICS) == set(names)
    from lightning_cam.predict.writer import DEFAULT_METRICS

    assert set(DEFAULT_METRICS) <= set(names)
    # every name is taken by both surfaces, and nothing else is
    assert lc.GradCAMCallback(metrics=list(names)).metrics == list(names)
    assert CAMWriter("out", metrics=list(names)).metrics == list(names)
    for bad in ("accuracy", "iou"):
        with pytest.raises(MisconfigurationException, match="metrics="):
            lc.GradCAMCallback(metrics=[bad])
        with pytest.raises(MisconfigurationException, match="metrics="):
            CAMWriter("out", metrics=[bad])


def test_every_metric_name_is_dispatched() -> None:
    torch.manual_seed(0)
    model = tiny_model().eval()
    images = torch.rand(2, 3, 32, 32)
    maps = torch.rand(2, 32, 32)
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, 8:16, 8:16] = True
    out = M.image_metrics(
        M.METRIC_NAMES, model, images, maps, torch.tensor([0, 1]), masks, None,
        tolerance=M.pointing_tolerance(None, images.shape), deletion_steps=4,
    )  # fmt: skip
    assert list(out) == list(M.METRIC_NAMES)
    assert all(v.shape == (2,) and torch.isfinite(v).all() for v in out.values())


def test_one_pointing_game_tolerance_rule() -> None:
    images = torch.zeros(1, 3, 112, 448)
    assert M.pointing_tolerance(None, images.shape) == 15 * 112 / 224
    assert M.pointing_tolerance(4, images.shape) == 4.0
    cb = lc.GradCAMCallback()
    assert lc.callbacks.render.pointing_tolerance(cb.options, images) == 7.5
    assert CAMWriter("out")._tolerance((112, 448)) == 7.5
    assert CAMWriter("out", pointing_game_tolerance=2)._tolerance((112, 448)) == 2.0


def test_options_are_built_by_name_from_the_one_signature() -> None:
    params = list(inspect.signature(lc.CAMCallback.__init__).parameters.values())[1:]
    assert O.callback_defaults() == {p.name: p.default for p in params}
    with pytest.raises(TypeError):
        O.CAMOptions.from_arguments("backbone")  # type: ignore[misc]
    with pytest.raises(TypeError, match="num_sample"):
        O.CAMOptions.from_arguments(num_sample=3)
    # positional arguments of the callback still land on their own names
    cb = lc.GradCAMCallback("backbone", 3, 2, "label")
    assert (cb.layer, cb.num_samples, cb.every_n_epochs, cb.target) == (
        ["backbone"], 3, 2, "label"
    )


def test_parse_batch_is_shared() -> None:
    images, labels = torch.zeros(2, 3, 8, 8), torch.tensor([0, 1])
    for batch in (images, (images, labels), [images, labels], {"image": images, "label": labels}):
        parts = parse_batch(batch)
        assert parts["image"] is images
    cb, writer = lc.GradCAMCallback(image_key="x"), CAMWriter("out", image_key="x")
    msg = r"image_key='x' is not in the batch \(keys: \['image'\]\)"
    with pytest.raises(MisconfigurationException, match=msg):
        cb.extract({"image": images})
    with pytest.raises(MisconfigurationException, match=msg):
        writer.extract({"image": images})
    for who in (lc.GradCAMCallback(), CAMWriter("out")):
        name = type(who).__name__
        with pytest.raises(MisconfigurationException, match=f"{name} expects batches"):
            who.extract(torch.zeros(8, 8))  # (B, C, L), (B, C, H, W), (B, C, D, H, W) are taken
        with pytest.raises(MisconfigurationException, match=f"{name} expects batches"):
            who.extract(torch.zeros(1, 1, 2, 2, 2, 2))
        assert who.extract(torch.zeros(2, 1, 16))["image"].shape == (2, 1, 16)


def _module_imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` imported at module level (``if TYPE_CHECKING`` blocks too)."""
    found: set[str] = set()
    body = list(ast.parse(path.read_text()).body)
    while body:
        node = body.pop(0)
        if isinstance(node, ast.If):
            body += node.body + node.orelse
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(package):
                found.add(node.module)
            if node.module == package:
                found |= {f"{package}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(package)}
    return found


def test_no_module_level_import_cycle_among_the_callbacks() -> None:
    package = "lightning_cam.callbacks"
    root = Path(lc.callbacks.__file__).parent
    graph = {
        f"{package}.{p.stem}": _module_imports(p, package) - {package}
        for p in root.glob("*.py")
        if p.stem != "__init__"
    }

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, " -> ".join((*stack, node))
        for nxt in graph.get(node, ()):
            visit(nxt, (*stack, node))

    for module in graph:
        visit(module, ())
