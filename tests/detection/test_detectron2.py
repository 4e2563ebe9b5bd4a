"""The detectron2 backend on random-weight model-zoo architectures, small inputs.

Faster R-CNN R50-C4 (VOC) and RetinaNet R50-FPN (COCO) are built from detectron2's packaged
configs with random (seeded) weights; maps are checked against an independent computation with
the model's own forward (detections, RoI proposal, FPN level), and the model is checked to be
untouched afterwards. Skipped when detectron2 is not installed, unless
``LIGHTNING_CAM_REQUIRE_OPTIONAL=1`` (``make test``, CI), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import torch
import torchvision

from lightning_cam.cli.detect import main as detect_main
from lightning_cam.detection import detectron2 as d2x
from lightning_cam.detection.base import paste_roi_maps as _paste
from lightning_cam.detection.base import select_detections as _select
from lightning_cam.detection.base import to_original as _to_original
from lightning_cam.methods import combine, gradcam_weights, gradcampp_weights, normalize_maps
from lightning_cam.methods import upsample as upsample_maps
from lightning_cam.tools import viz
from tests.optional import require

C4 = "PascalVOC-Detection/faster_rcnn_R_50_C4.yaml"
RETINA = "COCO-Detection/retinanet_R_50_FPN_3x.yaml"
STD = "[57.375, 57.12, 58.395]"  # realistic: with random weights, std 1 saturates the scores
SMALL = ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192", "MODEL.PIXEL_STD", STD]
C4_OPTS = [*SMALL, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0", "MODEL.RPN.POST_NMS_TOPK_TEST", "20"]
# two candidates per FPN level: the detections come from every level, not only from P3
RETINA_OPTS = [*SMALL, "MODEL.RETINANET.SCORE_THRESH_TEST", "0",
               "MODEL.RETINANET.TOPK_CANDIDATES_TEST", "2"]
IMAGE = (3, 120, 170)  # not square, not a multiple of 32: resize and padding both matter
WEIGHTS = {"gradcam": gradcam_weights, "gradcam++": gradcampp_weights}
CLS_SUBNET = [f"head.cls_subnet.{i}" for i in range(8)]

GRAD = ("gradcam", "gradcam++")  # the methods whose maps these tests check


@pytest.fixture(scope="module")
def d2() -> Any:
    return require("detectron2", "scripts/install_detectron2.sh installs it")


def _build(config: str, opts: list[str]) -> tuple[Any, Any]:
    torch.manual_seed(0)
    return d2x.build_detectron2_model(config, opts=opts)


@pytest.fixture(scope="module")
def frcnn(d2) -> tuple[Any, Any]:
    return _build(C4, C4_OPTS)


@pytest.fixture(scope="module")
def retina(d2) -> tuple[Any, Any]:
    return _build(RETINA, RETINA_OPTS)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(IMAGE, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------ state of the model


def _code() -> dict[tuple[str, ...], Any]:
    """Every function and class of detectron2's modules, and every entry of its classes."""
    out: dict[tuple[str, ...], Any] = {}
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "detectron2" or name.startswith("detectron2.")):
            continue
        for attr, value in list(vars(mod).items()):
            if callable(value):
                out[(name, attr)] = value
            if isinstance(value, type) and value.__module__ == name:
                for key, member in vars(value).items():
                    out[(name, attr, key)] = member
    return out


def _state(model: torch.nn.Module) -> dict[str, Any]:
    mods = dict(model.named_modules())
    return {
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                     + len(m._backward_pre_hooks) for m in mods.values()),
        "global_hooks": len(torch.nn.modules.module._global_forward_hooks),
        "instance_attrs": {n: sorted(vars(m)) for n, m in mods.items()},
        "training": {n: m.training for n, m in mods.items()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": [n for n, p in model.named_parameters() if p.grad is not None],
    }


def _run_borrowed(model, explainer, image) -> tuple[Any, dict, dict, dict, dict]:
    """Explain with the model in train mode, backbone.res3 frozen: state before and after."""
    frozen = [p for n, p in model.named_parameters() if "res3" in n]
    for p in frozen:
        p.requires_grad_(False)
    model.train()
    try:
        before, code = _state(model), _code()
        result = explainer(image)
        after, code_after = _state(model), _code()
    finally:
        model.eval()
        for p in frozen:
            p.requires_grad_(True)
    return result, before, after, code, code_after


@pytest.fixture(scope="module")
def frcnn_run(frcnn, image):
    model, cfg = frcnn
    explainer = d2x.Detectron2Explainer(
        model, cfg, layer=["backbone.res3", "backbone.res4"], score_threshold=0.0, top_k=3,
        roi_cams=True, methods=GRAD
    )
    return _run_borrowed(model, explainer, image)


@pytest.fixture(scope="module")
def retina_run(retina, image):
    model, cfg = retina
    explainer = d2x.Detectron2Explainer(
        model, cfg, layer=[*CLS_SUBNET, "backbone.bottom_up.res5"], score_threshold=0.0,
        top_k=10, methods=GRAD
    )
    return _run_borrowed(model, explainer, image)


@pytest.mark.parametrize("run", ["frcnn_run", "retina_run"])
def test_model_code_and_state_untouched(request, run):
    _, before, after, code, code_after = request.getfixturevalue(run)
    assert before["hooks"] == 0 and after == before
    assert after["training"][""] is True  # the model was in train mode and stays so
    assert not all(after["requires_grad"].values())  # frozen parameters stay frozen
    assert after["grads"] == []
    changed = [k for k, v in code.items() if code_after.get(k) is not v]
    assert changed == [], f"detectron2 code changed: {changed[:5]}"


def _check_maps(result, layers, low, high):
    k = len(result)
    assert low <= k <= high
    assert result.layers == layers
    assert torch.all(result.scores[:-1] >= result.scores[1:])
    for method in ("gradcam", "gradcam++"):
        for layer in layers:
            maps = result.map(method, layer)
            assert maps.shape == (k, IMAGE[1], IMAGE[2])
            assert torch.isfinite(maps).all()
            assert maps.min() >= 0 and maps.max() <= 1
        assert any(result.map(method, layer).amax() == 1 for layer in layers)
    assert result.boxes.shape == (k, 4)
    assert (result.boxes[:, 0::2] <= IMAGE[2] + 1e-3).all()
    assert (result.boxes[:, 1::2] <= IMAGE[1] + 1e-3).all()


def test_faster_rcnn_maps_per_detection_and_roi(frcnn_run):
    result = frcnn_run[0]
    _check_maps(result, ["backbone.res3", "backbone.res4", "roi_heads.res5"], 3, 3)
    assert result.class_names is not None and len(result.class_names) == 20  # VOC metadata
    assert all(name in result.class_names for name in result.label_names())
    # RoI maps live in the proposal box
    assert result.proposals is not None and result.proposals.shape == (3, 4)
    for method in ("gradcam", "gradcam++"):
        maps = result.map(method, "roi_heads.res5")
        for k in range(3):
            x1, y1, x2, y2 = result.proposals[k].round().long().tolist()
            inside = torch.zeros(IMAGE[1:], dtype=torch.bool)
            inside[max(y1, 0) : y2, max(x1, 0) : x2] = True
            assert maps[k][~inside].abs().max() == 0


def _own_forward(model, explainer, image, names, top_k, inputs_of=None):
    """The model's own forward (no explainer), grad recording on, capturing ``names``'
    outputs (every call) and, for ``inputs_of``, the inputs of that module's first call."""
    captured: dict[str, list[Any]] = {n: [] for n in names}
    seen_inputs: list[Any] = []
    handles = []
    mods = dict(model.named_modules())
    try:
        for n in names:
            handles.append(mods[n].register_forward_hook(
                lambda _m, _i, out, n=n: captured[n].append(out)))
        if inputs_of is not None:
            handles.append(mods[inputs_of].register_forward_hook(
                lambda _m, inp, _o: seen_inputs.append(inp)))
        x = explainer.preprocess(image)
        with torch.enable_grad():
            out = model([{"image": x[0], "height": IMAGE[1], "width": IMAGE[2]}])
    finally:
        for h in handles:
            h.remove()
    inst = out[0]["instances"]
    keep = _select(inst.scores.detach(), 0.0, top_k)
    resized = tuple(x.shape[-2:])
    padded = explainer._padded(x)
    return inst, keep, captured, seen_inputs, resized, padded


def test_faster_rcnn_matches_own_forward_proposal_and_backbone(frcnn, frcnn_run, image):
    """Detections = the model's own forward; the RoI map is the CAM of the one RoI row whose
    gradient is non-zero (the detection's proposal), pasted into that proposal; the backbone
    map is the plain Grad-CAM of backbone.res4."""
    model, cfg = frcnn
    result = frcnn_run[0]
    explainer = d2x.Detectron2Explainer(model, cfg, score_threshold=0.0, top_k=3, methods=GRAD)
    inst, keep, cap, inputs, resized, padded = _own_forward(
        model, explainer, image, ["backbone.res4", "roi_heads.res5"], 3,
        inputs_of="roi_heads.pooler",
    )
    assert torch.allclose(inst.pred_boxes.tensor[keep].detach(), result.boxes, atol=1e-4)
    assert torch.allclose(inst.scores[keep].detach(), result.scores, atol=1e-6)
    assert torch.equal(inst.pred_classes[keep], result.labels)
    (res4,), (res5,) = cap["backbone.res4"], cap["roi_heads.res5"]
    proposals = inputs[0][1][0].tensor  # pooler(features, [Boxes]): resized coordinates
    scale = torch.tensor([IMAGE[2] / resized[1], IMAGE[1] / resized[0]] * 2)
    for k in range(3):
        g4, g5 = torch.autograd.grad(inst.scores[keep[k]], [res4, res5], retain_graph=True)
        rows = (g5.flatten(1).abs().sum(1) > 0).nonzero().flatten()
        assert rows.numel() == 1  # the detection's proposal
        row = int(rows)
        box = proposals[row] * scale
        assert torch.allclose(box, result.proposals[k], atol=1e-3)
        for method, weights in WEIGHTS.items():
            a, g = res5[row : row + 1].detach(), g5[row : row + 1]
            expected = _paste(normalize_maps(combine(a, weights(a, g))), box[None], IMAGE[1:])
            assert torch.allclose(result.map(method, "roi_heads.res5")[k], expected[0],
                                  atol=2e-3)
            a, g = res4.detach(), g4
            cam = normalize_maps(combine(a, weights(a, g)))
            expected = _to_original(cam, resized, padded, IMAGE[1:])
            assert torch.allclose(result.map(method, "backbone.res4")[k], expected[0], atol=2e-3)


def test_retinanet_maps_per_detection(retina_run):
    result = retina_run[0]
    _check_maps(result, [*CLS_SUBNET, "backbone.bottom_up.res5"], 5, 10)
    assert result.class_names is not None and len(result.class_names) == 80  # COCO metadata
    assert result.proposals is None


def test_retinanet_levels_other_than_the_detections_contribute_zero(retina, retina_run, image):
    """head.cls_subnet.7 runs once per FPN level. For each detection, exactly one level's output
    has a non-zero gradient, and the explainer's map equals the CAM of that level alone."""
    model, cfg = retina
    result = retina_run[0]
    explainer = d2x.Detectron2Explainer(model, cfg, score_threshold=0.0, methods=GRAD)
    layer = "head.cls_subnet.7"
    inst, keep, cap, _, resized, padded = _own_forward(model, explainer, image, [layer], 10)
    levels = cap[layer]
    assert len(levels) == 5  # P3..P7
    assert torch.allclose(inst.pred_boxes.tensor[keep].detach(), result.boxes, atol=1e-4)
    seen = set()
    for k in range(len(result)):
        grads = torch.autograd.grad(inst.scores[keep[k]], levels, retain_graph=True)
        nonzero = [i for i, g in enumerate(grads) if g.abs().sum() > 0]
        assert len(nonzero) == 1
        (level,) = nonzero
        seen.add(level)
        for method, weights in WEIGHTS.items():
            a, g = levels[level].detach(), grads[level]
            cam = upsample_maps(combine(a, weights(a, g)), tuple(levels[0].shape[-2:]))
            expected = _to_original(normalize_maps(cam), resized, padded, IMAGE[1:])
            assert torch.allclose(result.map(method, layer)[k], expected[0], atol=2e-3)
    assert len(seen) >= 3, f"the seeded case has detections of several levels, got {seen}"


def test_hygiene_after_an_exception(retina, image, monkeypatch):
    model, cfg = retina
    explainer = d2x.Detectron2Explainer(model, cfg, layer="head.cls_subnet.0", score_threshold=0.0,
                                        methods=GRAD)
    before, code = _state(model), _code()

    def boom(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(d2x, "select_detections", boom)
    with pytest.raises(RuntimeError, match="injected"):
        explainer(image)
    assert _state(model) == before
    assert all(_code().get(k) is v for k, v in code.items())


def test_layers_validated(frcnn, retina):
    model, cfg = frcnn
    assert d2x.default_detectron2_layer(model) == "backbone.res4"
    assert d2x.default_detectron2_layer(retina[0]) == "backbone.bottom_up.res5"
    with pytest.raises(ValueError, match="res4"):
        d2x.Detectron2Explainer(model, cfg, layer="backbone.res44", methods=GRAD)
    with pytest.raises(ValueError, match="per region proposal"):
        d2x.Detectron2Explainer(model, cfg, layer="roi_heads.res5.0", methods=GRAD)
    with pytest.raises(ValueError, match="without gradient"):
        d2x.Detectron2Explainer(model, cfg, layer="proposal_generator.rpn_head.conv", methods=GRAD)
    with pytest.raises(ValueError, match="two-stage"):
        d2x.Detectron2Explainer(retina[0], retina[1], roi_cams=True, methods=GRAD)
    explainer = d2x.Detectron2Explainer(model, cfg, layer="roi_heads.res5", methods=GRAD)
    assert explainer.roi_cams and explainer.result_layers == ["backbone.res4", "roi_heads.res5"]
    tv = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3)
    assert not d2x.is_detectron2_model(tv)
    with pytest.raises(TypeError, match="detectron2 detector"):
        d2x.Detectron2Explainer(tv, methods=GRAD)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

    assert d2x.find_detectron2_model(Wrapper()) is model


def test_config_resolution_and_options(d2):
    assert d2x.resolve_config_file(RETINA.removesuffix(".yaml")).endswith(RETINA)
    with pytest.raises(ValueError, match="retinanet_R_50_FPN_3x.yaml"):
        d2x.resolve_config_file("COCO-Detection/retinanet_R_50_FPN_3.yaml")
    with pytest.raises(ValueError, match="LazyConfig"):
        d2x.resolve_config_file("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
    with pytest.raises(ValueError, match="MODEL.NOPE"):
        d2x.build_detectron2_model(RETINA, opts=["MODEL.NOPE", "1"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        d2x.build_detectron2_model(RETINA, "/nonexistent/model_final.pkl")


def test_weights_loaded_from_files_the_test_writes(frcnn, retina, tmp_path):
    """A model-zoo style ``.pkl`` (numpy arrays, ``__author__``) and a ``.pth`` load; weights
    of another architecture are refused instead of silently leaving random weights."""
    import pickle

    model, _ = frcnn
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pkl = tmp_path / "model_final.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()},
                     "__author__": "lightning-cam tests"}, f)
    torch.manual_seed(1)  # other random weights: loading must replace them
    loaded, _ = d2x.build_detectron2_model(C4, pkl, opts=C4_OPTS)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k
    pth = tmp_path / "retina.pth"
    torch.save({"model": retina[0].state_dict()}, pth)
    with pytest.raises(ValueError, match="no weight"):
        d2x.build_detectron2_model(C4, pth, opts=C4_OPTS)


def test_weights_judged_by_keys_and_shapes_not_values(frcnn, tmp_path, capsys, image):
    """A checkpoint equal to the freshly built model (the CLI seeds the build with 0) loads;
    weights of other shapes (another class count) or a partial checkpoint are refused, with
    the keys named, instead of detectron2 leaving some weights random."""
    model, _ = frcnn  # built with torch.manual_seed(0), like every build below
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    same = tmp_path / "same.pth"
    torch.save({"model": state}, same)
    torch.manual_seed(0)
    loaded, _ = d2x.build_detectron2_model(C4, same, opts=C4_OPTS)
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    path = tmp_path / "noise.png"
    viz.save_image(path, viz.to_uint8_image(image))
    code = detect_main([
        "--backend", "detectron2", "--config-file", C4, "--weight-path", str(same),
        "--image-path", str(path), "--score-threshold", "0", "--top-k", "1", "--quiet",
        "--output-dir", str(tmp_path / "out"), "--opts", *C4_OPTS,
    ])
    assert code == 0, capsys.readouterr().err

    key = "roi_heads.box_predictor.cls_score.weight"
    other = dict(state, **{key: torch.zeros(7, state[key].shape[1])})
    torch.save({"model": other}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=rf"other shapes.*{key}: \[7, 2048\].*NUM_CLASSES"):
        d2x.build_detectron2_model(C4, tmp_path / "other.pth", opts=C4_OPTS)
    partial = {k: v for k, v in state.items() if not k.startswith("roi_heads.")}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"are not in .*stay random: roi_heads\."):
        d2x.build_detectron2_model(C4, tmp_path / "partial.pth", opts=C4_OPTS)


def test_split_detectron2_batch(d2):
    from detectron2.structures import Boxes, Instances

    image = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    inst = Instances((20, 30), gt_boxes=Boxes(torch.tensor([[1.0, 2.0, 10.0, 12.0]])),
                     gt_classes=torch.tensor([4]))
    images, targets = d2x.split_detectron2_batch([{"image": image, "instances": inst}])
    assert torch.allclose(images[0], image.flip(0).float() / 255)  # BGR -> RGB in [0, 1]
    assert targets is not None and targets[0]["labels"].tolist() == [4]
    images, targets = d2x.split_detectron2_batch([{"image": image}], input_format="RGB")
    assert torch.allclose(images[0], image.float() / 255) and targets is None
    assert d2x.split_detectron2_batch(([image], [{"boxes": torch.zeros(0, 4)}])) is None


# ------------------------------------------------------------------ the command line


def test_cli_writes_boxes_heatmaps_sheet_and_summary(d2, tmp_path, capsys, image):
    path = tmp_path / "noise.png"
    viz.save_image(path, viz.to_uint8_image(image))
    out_dir = tmp_path / "out"
    code = detect_main([
        "--backend", "detectron2", "--config-file", C4, "--random-weights",
        "--image-path", str(path), "--layer-name", "backbone.res4", "--roi",
        "--score-threshold", "0", "--top-k", "2", "--output-dir", str(out_dir),
        "--method", "gradcam", "gradcam++", "--opts", *C4_OPTS,
    ])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["backend"] == "detectron2" and summary["weights"] == "random"
    assert summary["model"] == "faster_rcnn_R_50_C4" and summary["config_file"] == C4
    assert summary["layers"] == ["backbone.res4", "roi_heads.res5"]
    (record,) = summary["images"]
    assert record["image_size"] == list(IMAGE[1:])
    assert len(record["detections"]) == 2
    written = {record["files"]["predict_box"], record["files"]["sheet"]}
    for det in record["detections"]:
        assert not det["class_name"].startswith("class ")  # a name from VOC's metadata
        for layer in summary["layers"]:
            for method, suffix in (("gradcam", "heatmap"), ("gradcam++", "heatmap++")):
                name = det["files"][method][layer]
                assert name == f"noise-faster_rcnn_R_50_C4-{layer}-{det['index']}-{suffix}.jpg"
                written.add(name)
    assert {p.name for p in out_dir.iterdir()} == written | {"summary.json"}
    for name in written:
        picture = viz.load_image(out_dir / name)
        if "sheet" not in name:
            assert picture.shape == (*IMAGE[1:], 3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config-file", C4], "needs --weight-path"),
        ([], "needs --config-file"),
        (["--config-file", C4, "--random-weights", "--opts", "MODEL.X"], "KEY VALUE pairs"),
        (["--config-file", C4, "--random-weights", "--model", "retinanet_resnet50_fpn"],
         "--model is for the torchvision backend"),
        (["--config-file", RETINA.removesuffix(".yaml"), "--weight-path", "/no/such.pkl"],
         "does not exist"),
    ],
)
def test_cli_bad_input_in_one_line(d2, tmp_path, capsys, argv, message):
    code = detect_main(["--backend", "detectron2", "--output-dir", str(tmp_path), *argv])
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_detectron2_options_need_the_backend(tmp_path, capsys):
    code = detect_main(["--config-file", C4, "--output-dir", str(tmp_path)])
    assert code == 2 and "--config-file is for --backend detectron2" in capsys.readouterr().err


# ------------------------------------------------------------------ detectron2 absent


def test_clear_message_without_detectron2(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "detectron2", None)  # `import detectron2` fails
    with pytest.raises(ImportError, match="git\\+https://github.com/facebookresearch/detectron2"):
        d2x.require_detectron2()
    with pytest.raises(ImportError, match="pip install"):
        d2x.build_detectron2_model(RETINA)
    with pytest.raises(ImportError, match="detectron2"):
        d2x.Detectron2Explainer(torch.nn.Conv2d(3, 3, 1), methods=GRAD)
    code = detect_main(["--backend", "detectron2", "--config-file", RETINA,
                        "--weight-path", "x.pkl", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install 'git+https://github.com/facebookresearch/detectron2.git'" in err
    assert not d2x.is_detectron2_model(torch.nn.Conv2d(3, 3, 1))


def test_importing_lightning_cam_does_not_import_detectron2():
    code = ("import sys, lightning_cam, lightning_cam.detection, lightning_cam.cli.detect, "
            "lightning_cam.detection.render, lightning_cam.detection.detectron2; "
            "sys.exit('detectron2' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


# ------------------------------------------------------------------ in the callbacks


def test_callback_logs_detectron2_detections(d2, retina, tmp_path):
    import pytorch_lightning as pl
    from detectron2.structures import Boxes, Instances
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_cam import GradCAMCallback
    from tests.callbacks.helpers import image_events

    model, _ = retina

    class D2Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.model(batch)

    def item(seed: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        inst = Instances((128, 160))
        inst.gt_boxes = Boxes(torch.tensor([[20.0, 30.0, 70.0, 90.0]]))
        inst.gt_classes = torch.tensor([3])
        return {"image": torch.rand(3, 128, 160, generator=g) * 255, "height": 128,
                "width": 160, "instances": inst}

    loader = torch.utils.data.DataLoader([item(i) for i in range(2)], batch_size=2,
                                         collate_fn=lambda b: b)
    cb = GradCAMCallback(layer="model.head.cls_subnet.7", num_samples=2, detection_top_k=2,
                         detection_score_threshold=0.0)
    logger = TensorBoardLogger(str(tmp_path), name="d2")
    trainer = pl.Trainer(accelerator="cpu", logger=logger, callbacks=[cb],
                         enable_progress_bar=False, enable_model_summary=False)
    module = D2Module()
    trainer.validate(module, dataloaders=loader)
    assert set(image_events(logger.log_dir)) == {"gradcam/model.head.cls_subnet.7/detections"}
    (image, target), _ = cb.det_probes
    assert image.shape == (3, 128, 160) and 0 <= float(image.min()) <= float(image.max()) <= 1
    assert target["boxes"].tolist() == [[20.0, 30.0, 70.0, 90.0]]
    assert all(not m._forward_hooks for m in model.modules())
