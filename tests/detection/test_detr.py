"""DETR-family detectors (transformers): per-query maps equal brute-force Grad-CAMs, scores and
boxes are the post-processing's, the cross-attention map is the model's own, nothing leaks."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tests.optional import require

T = require("transformers", "pip install transformers (lightning-cam[hf])")

from lightning_cam.detection.base import to_original  # noqa: E402
from lightning_cam.detection.detr import (  # noqa: E402
    CROSS_ATTENTION,
    DetrExplainer,
    detr_family,
    query_scores,
)
from tests.detection.detr_models import FAMILIES, tiny_detr  # noqa: E402

IMAGE = (3, 50, 120)  # not square, resized to 40 x 96 (DETR) / 64 x 96 (RT-DETR)


def _image(seed: int = 1) -> torch.Tensor:
    return torch.rand(*IMAGE, generator=torch.Generator().manual_seed(seed))


def _inputs(processor, image):
    out = processor(images=image, return_tensors="pt", do_rescale=False)
    return out["pixel_values"], out.get("pixel_mask")


def _brute_force(model, processor, image, layer, query, label):
    """Grad-CAM of one detection's own score, own forward and own backward (plain hooks, on a
    copy whose parameters all require grad: transformers freezes DETR's ResNet backbone)."""
    model = copy.deepcopy(model).requires_grad_(True)
    x, mask = _inputs(processor, image)
    module = model.get_submodule(layer)
    acts = []
    handle = module.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        out = model(pixel_values=x, pixel_mask=mask) if mask is not None else model(pixel_values=x)
    finally:
        handle.remove()
    score = query_scores(out.logits[0], detr_family(model), query[None], label[None])[0]
    (g,) = torch.autograd.grad(score, acts[0])
    a = acts[0].detach()[0]
    cam = torch.relu((g[0].mean((1, 2))[:, None, None] * a).sum(0))
    padded = tuple(x.shape[-2:])
    resized = padded if mask is None else (int(mask[0].any(-1).sum()), int(mask[0].any(-2).sum()))
    return to_original(cam[None], resized, padded, IMAGE[1:])[0], score.detach(), out


#: The layer compared with the brute force: the default (the backbone's last stage), except for
#: Deformable DETR, whose random-init backbone CAMs are ~1e-10 (float rounding decides their
#: sign): there the last level's input projection (GroupNorm-ed, well conditioned).
LAYERS = {"deformable_detr": "model.input_proj.2"}


def test_default_layer_is_the_backbones_last_stage_or_rt_detrs_finest_encoder_level():
    for family in FAMILIES:
        model, processor = tiny_detr(family)
        layers = DetrExplainer(model, processor).layers
        if family.startswith("rt_detr"):  # measured best (benchmarks/detection_quality.md)
            blocks = model.model.encoder.fpn_blocks
            assert layers == [f"model.encoder.fpn_blocks.{len(blocks) - 1}"]
            result = DetrExplainer(model, processor, score_threshold=0.0, top_k=2)(
                torch.rand(3, 64, 96))
            assert result.map("eigengradcam", layers[0]).shape == (2, 64, 96)
        else:
            assert layers == ["model.backbone.model.encoder.stages.3"]


@pytest.mark.parametrize("family", FAMILIES)
def test_maps_equal_brute_force_and_scores_are_reported(family):
    model, processor = tiny_detr(family)
    explainer = DetrExplainer(model, processor, layer=LAYERS.get(family), methods="gradcam",
                              score_threshold=0.0, top_k=3)
    image = _image()
    result = explainer(image)
    assert len(result) == 3
    layer = explainer.layers[0]
    torch.testing.assert_close(explainer.last_scores, result.scores, rtol=0, atol=1e-6)
    for k in range(3):
        q, c = explainer.last_queries[k], result.labels[k]
        expected, score, out = _brute_force(model, processor, image, layer, q, c)
        assert abs(float(score) - float(result.scores[k])) < 1e-6
        torch.testing.assert_close(result.map("gradcam")[k], expected, rtol=0, atol=1e-5)
        # the box: the query's own (cx, cy, w, h) in the image's pixels (50 x 120)
        cx, cy, w, h = out.pred_boxes[0, q].detach().tolist()
        box = torch.tensor([(cx - w / 2) * 120, (cy - h / 2) * 50, (cx + w / 2) * 120,
                            (cy + h / 2) * 50])
        torch.testing.assert_close(result.boxes[k], box, rtol=0, atol=1e-3)
    assert result.map("gradcam").shape == (3, *IMAGE[1:])


def test_detr_selection_is_softmax_with_no_object():
    model, processor = tiny_detr("detr")
    explainer = DetrExplainer(model, processor, score_threshold=0.0, top_k=4)
    result = explainer(_image())
    x, mask = _inputs(processor, _image())
    with torch.no_grad():
        prob = model(pixel_values=x, pixel_mask=mask).logits[0].softmax(-1)
    best, labels = prob[:, :-1].max(-1)
    order = torch.argsort(best, descending=True, stable=True)[:4]
    torch.testing.assert_close(result.scores, best[order], rtol=0, atol=1e-6)
    assert torch.equal(result.labels, labels[order])
    assert torch.equal(explainer.last_queries, order)


def test_sigmoid_family_explains_query_class_pairs():
    model, processor = tiny_detr("deformable_detr")
    explainer = DetrExplainer(model, processor, score_threshold=0.0, top_k=5)
    result = explainer(_image())
    x, mask = _inputs(processor, _image())
    with torch.no_grad():
        logits = model(pixel_values=x, pixel_mask=mask).logits[0]
    q, c = explainer.last_queries, result.labels
    torch.testing.assert_close(result.scores, logits[q, c].sigmoid(), rtol=0, atol=1e-6)
    top = logits.sigmoid().flatten().topk(5).values
    torch.testing.assert_close(result.scores, top, rtol=0, atol=1e-6)


def test_threshold_top_k_and_no_detection():
    model, processor = tiny_detr("rt_detr")
    explainer = DetrExplainer(model, processor, score_threshold=0.0, top_k=10)
    scores = explainer(_image()).scores
    cut = float(scores[3])
    r = DetrExplainer(model, processor, score_threshold=cut, top_k=10)(_image())
    assert len(r) == int((scores >= cut).sum()) and bool((r.scores >= cut).all())
    none = DetrExplainer(model, processor, score_threshold=1.0, top_k=3)(_image())
    assert len(none) == 0 and none.map().shape == (0, *IMAGE[1:])


@pytest.mark.parametrize("family", ["detr", "conditional_detr"])
def test_cross_attention_is_the_models_attention(family):
    model, processor = tiny_detr(family)
    explainer = DetrExplainer(model, processor, score_threshold=0.0, top_k=3,
                              cross_attention=True)
    image = _image()
    result = explainer(image)
    x, mask = _inputs(processor, image)
    with torch.no_grad():
        out = model(pixel_values=x, pixel_mask=mask, output_attentions=True)
    attn = out.cross_attentions[-1][0]  # (heads, Q, h * w): the last decoder layer
    h, w = -(-x.shape[-2] // 32), -(-x.shape[-1] // 32)
    assert attn.shape[-1] == h * w
    for k, q in enumerate(explainer.last_queries.tolist()):
        grid = attn[:, q].mean(0).reshape(1, h, w)
        resized = (int(mask[0].any(-1).sum()), int(mask[0].any(-2).sum()))
        expected = to_original(grid, resized, tuple(x.shape[-2:]), IMAGE[1:])[0]
        torch.testing.assert_close(result.map(CROSS_ATTENTION)[k], expected, rtol=0, atol=1e-6)
    assert result.attention_maps[CROSS_ATTENTION].shape == (3, *IMAGE[1:])


def test_encoder_tokens_are_folded_into_the_feature_grid():
    model, processor = tiny_detr("detr")
    explainer = DetrExplainer(model, processor, layer="model.encoder.layers.0", methods="gradcam",
                              score_threshold=0.0, top_k=2)
    image = _image()
    result = explainer(image)
    x, mask = _inputs(processor, image)
    model = copy.deepcopy(model).requires_grad_(True)
    acts = []
    handle = model.model.encoder.layers[0].register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        out = model(pixel_values=x, pixel_mask=mask)
    finally:
        handle.remove()
    tokens = acts[0][0] if isinstance(acts[0], tuple) else acts[0]
    q, c = explainer.last_queries[0], result.labels[0]
    score = query_scores(out.logits[0], detr_family(model), q[None], c[None])[0]
    (g,) = torch.autograd.grad(score, tokens)
    h, w = -(-x.shape[-2] // 32), -(-x.shape[-1] // 32)
    a = tokens.detach()[0].reshape(h, w, -1).permute(2, 0, 1)
    g = g[0].reshape(h, w, -1).permute(2, 0, 1)
    cam = torch.relu((g.mean((1, 2))[:, None, None] * a).sum(0))
    resized = (int(mask[0].any(-1).sum()), int(mask[0].any(-2).sum()))
    expected = to_original(cam[None], resized, tuple(x.shape[-2:]), IMAGE[1:])[0]
    torch.testing.assert_close(result.map("gradcam")[0], expected, rtol=0, atol=1e-5)


def test_harmless_on_success_and_on_error():
    model, processor = tiny_detr("detr")
    model.train()
    for p in model.parameters():
        p.grad = None
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    explainer = DetrExplainer(model, processor, score_threshold=0.0, top_k=2)
    explainer(_image())

    def check():
        assert model.training and all(m.training for m in model.modules())
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
        assert all(p.grad is None for p in model.parameters())
        assert not frozen.requires_grad
        assert torch.is_grad_enabled()

    check()

    def boom(*args, **kwargs):
        raise RuntimeError("injected")

    processor.post_process_object_detection = boom
    with pytest.raises(RuntimeError, match="injected"):
        explainer(_image())
    check()


def test_refusals():
    model, processor = tiny_detr("deformable_detr")
    with pytest.raises(ValueError, match="deformable attention"):
        DetrExplainer(model, processor, cross_attention=True)
    with pytest.raises(ValueError, match="several feature levels"):
        DetrExplainer(model, processor, layer="model.encoder.layers.0")
    with pytest.raises(ValueError, match="queries, not image positions"):
        DetrExplainer(model, processor, layer="model.decoder.layers.0")
    # a post-processing of another family: the query link is refused, not guessed
    wrong = T.DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    with pytest.raises(ValueError, match="ambiguous"):
        DetrExplainer(model, wrong, score_threshold=0.0)(_image())
    sdpa, proc = tiny_detr("detr", attn=None)  # transformers picks sdpa
    assert sdpa.config._attn_implementation != "eager"
    with pytest.raises(ValueError, match="eager"):
        DetrExplainer(sdpa, proc, cross_attention=True)
    with pytest.raises(TypeError, match="TorchScript"):
        DetrExplainer(torch.jit.script(torch.nn.Linear(2, 2)), processor)
    with pytest.raises(TypeError, match="not a supported"):
        DetrExplainer(torch.nn.Conv2d(3, 3, 1), processor)


def test_save_pretrained_folder_and_cli(tmp_path):
    from PIL import Image

    from lightning_cam.cli.detect import main

    model, processor = tiny_detr("detr")
    model.config.id2label = {0: "circle", 1: "square", 2: "triangle"}
    model.save_pretrained(tmp_path / "detr")
    processor.save_pretrained(tmp_path / "detr")
    loaded = DetrExplainer.from_pretrained(tmp_path / "detr", score_threshold=0.0, top_k=2)
    image = _image()
    direct = DetrExplainer(model, processor, score_threshold=0.0, top_k=2)(image)
    again = loaded(image)
    torch.testing.assert_close(again.scores, direct.scores)
    torch.testing.assert_close(again.map(), direct.map(), rtol=0, atol=1e-5)
    assert again.label_names()[0] in ("circle", "square", "triangle")

    pixels = (image.permute(1, 2, 0) * 255).round().byte().numpy()
    Image.fromarray(pixels).save(tmp_path / "img.png")
    out = tmp_path / "out"
    code = main(["--model", f"hf:{tmp_path / 'detr'}", "--image-path", str(tmp_path / "img.png"),
                 "--score-threshold", "0", "--top-k", "2", "--method", "gradcam",
                 "--cross-attention", "--output-dir", str(out), "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    dets = summary["images"][0]["detections"]
    assert len(dets) == 2 and summary["backend"] == "hf"
    for det in dets:
        for files in det["files"].values():
            for name in files.values():
                assert (out / name).is_file()
    assert CROSS_ATTENTION in dets[0]["files"]


@pytest.mark.parametrize("family", ["conditional_detr", "rt_detr"])
def test_callback_on_a_lightning_module_wrapping_detr(tmp_path, family):
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader

    from lightning_cam import GradCAMCallback
    from tests.callbacks.helpers import image_events

    class DetrModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.image_processor = tiny_detr(family)

        def validation_step(self, batch, batch_idx):
            pixels = self.image_processor(images=batch[0], return_tensors="pt", do_rescale=False)
            self.model(**pixels)

    def item(i):
        target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 30.0]]), "labels": torch.tensor([0])}
        return _image(i), target

    loader = DataLoader([item(i) for i in range(2)], batch_size=2,
                        collate_fn=lambda b: ([x for x, _ in b], [t for _, t in b]))
    callback = GradCAMCallback(num_samples=2, detection_top_k=2, detection_score_threshold=0.0)
    logger = TensorBoardLogger(str(tmp_path), name="detr")
    trainer = pl.Trainer(accelerator="cpu", logger=logger, callbacks=[callback],
                         enable_progress_bar=False, enable_model_summary=False)
    module = DetrModule()
    trainer.validate(module, dataloaders=loader)
    layer = ("model.encoder.fpn_blocks.1" if family == "rt_detr"  # the family's default
             else "model.backbone.model.encoder.stages.3")
    assert f"gradcam/model.{layer}/detections" in image_events(logger.log_dir)
    assert all(not m._forward_hooks for m in module.modules())


def test_callback_on_uint8_batches_explains_the_images_in_0_1(tmp_path):
    """A module fed uint8 images (its processor rescales them in the step): the callback's
    probes come out as floats in [0, 1] and are explained, not refused after training."""
    from lightning_cam.callbacks.detection import split_detector_batch

    model, processor = tiny_detr("rt_detr")
    images = [(_image(i) * 255).round().to(torch.uint8) for i in range(2)]
    target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 30.0]]), "labels": torch.tensor([0])}
    split = split_detector_batch(model, "hf", (images, [target, target]), processor)
    assert split is not None
    out, targets = split
    assert targets is not None and len(targets) == 2
    for got, raw in zip(out, images, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, raw.float() / 255)
    result = DetrExplainer(model, processor, score_threshold=0.0, top_k=2)(out[0])
    assert result.map().shape == (2, *out[0].shape[1:])


def test_explain_detr_batch_finds_the_model_and_its_processor():
    from lightning_cam.detection import explain_detr_batch, find_detr_model

    model, processor = tiny_detr("rt_detr")
    wrapper = torch.nn.Module()
    wrapper.model, wrapper.image_processor = model, processor
    assert find_detr_model(wrapper) is model and find_detr_model(torch.nn.Linear(2, 2)) is None
    images = [_image(1), _image(2)[:, :40]]
    results = explain_detr_batch(wrapper, images, methods="gradcam", top_k=2,
                                 score_threshold=0.0)
    direct = DetrExplainer(model, processor, methods="gradcam", top_k=2, score_threshold=0.0)
    for image, result in zip(images, results, strict=True):
        expected = direct(image)
        assert result.map().shape == (2, *image.shape[1:])
        torch.testing.assert_close(result.map(), expected.map())
        torch.testing.assert_close(result.boxes, expected.boxes)
    with pytest.raises(TypeError, match="does not wrap"):
        explain_detr_batch(torch.nn.Linear(2, 2), images)


def test_benchmark_runs_and_the_recipes_agree_with_ours():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "detection_detr.py"
    spec = importlib.util.spec_from_file_location("lightning_cam_bench_detr", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    try:
        spec.loader.exec_module(bench)
        rows = bench.run_family("detr", k=3, reps=1, warmup=0, quick=True)
    finally:
        sys.modules.pop(spec.name, None)
    recipe = [r for r in rows if r["case"].startswith("one backward per box")]
    assert recipe and recipe[0]["diff"] < 1e-5  # no timing asserted: numbers only


def _hf_batch(processor, count=2):
    """What the Hugging Face fine-tuning recipe feeds a LightningModule: the processor's output
    for uint8 images with COCO annotations (two sizes, so the second is padded)."""
    import numpy as np

    g = np.random.default_rng(0)
    images = [g.integers(0, 256, (64, 96 - 16 * i, 3), dtype=np.uint8) for i in range(count)]
    annotations = [{"image_id": i, "annotations": [
        {"bbox": [10.0 + i, 8.0, 30.0, 20.0], "category_id": 1 + i, "area": 600.0, "iscrowd": 0}]}
        for i in range(count)]
    batch = processor(images=images, annotations=annotations, return_tensors="pt")
    return images, batch


def test_hugging_face_batches_split_back_to_images_and_boxes():
    from lightning_cam.detection.detr_data import hf_detection_labels, split_hf_detection_batch

    _, processor = tiny_detr("detr")
    images, batch = _hf_batch(processor)
    assert batch["pixel_values"].shape[-2:] == (64, 96)  # the second image is padded
    got, targets = split_hf_detection_batch(batch, processor)
    for i, (image, out, target) in enumerate(zip(images, got, targets, strict=True)):
        expected = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, atol=2e-6, rtol=0)
        torch.testing.assert_close(target["boxes"],
                                   torch.tensor([[10.0 + i, 8.0, 40.0 + i, 28.0]]), atol=1e-4,
                                   rtol=0)
        assert target["labels"].tolist() == [1 + i]
    # and back: the labels a DETR's loss reads, normalised by the canvas
    (labels,) = hf_detection_labels(targets[:1], (64, 96))
    torch.testing.assert_close(labels["boxes"], batch["labels"][0]["boxes"], atol=1e-5, rtol=0)
    assert split_hf_detection_batch({"image": torch.zeros(1, 3, 4, 4)}, processor) is None
    no_labels = {"pixel_values": batch["pixel_values"]}
    assert split_hf_detection_batch(no_labels, processor)[1] is None


def test_callback_on_the_hugging_face_recipe_module(tmp_path):
    """A LightningModule written as the Hugging Face DETR fine-tuning recipe writes it: dict
    batches from the processor (no image_processor attribute on the module), labels with
    normalised boxes; the callback logs a map per detection, equal to the explainer's on the
    batch's images, and the pointing game of the matched detections."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from lightning_cam import GradCAMCallback
    from lightning_cam.detection.detr_data import split_hf_detection_batch
    from tests.callbacks.helpers import image_events

    model, processor = tiny_detr("detr")

    class Detr(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values, pixel_mask):
            return self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)

        def validation_step(self, batch, batch_idx):
            out = self.model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"],
                             labels=batch["labels"])
            self.log("val/loss", out.loss, batch_size=len(batch["labels"]))

    _, batch = _hf_batch(processor)
    loader = DataLoader([batch], batch_size=None)
    callback = GradCAMCallback(num_samples=2, detection_top_k=2, detection_score_threshold=0.0,
                               metrics=["pointing_game"])
    logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="hf")
    trainer = pl.Trainer(accelerator="cpu", logger=logger, callbacks=[callback],
                         enable_progress_bar=False, enable_model_summary=False)
    module = Detr()
    trainer.validate(module, dataloaders=loader)
    tags = image_events(logger.log_dir)
    assert "gradcam/model.model.backbone.model.encoder.stages.3/detections" in tags
    assert all(not m._forward_hooks and not m._backward_hooks for m in module.modules())
    # the maps are the explainer's on the batch's images, at their batched size
    images, _ = split_hf_detection_batch(batch, processor)
    unresized = copy.deepcopy(processor)
    unresized.do_resize = False
    direct = DetrExplainer(model, unresized, methods="gradcam", top_k=2, score_threshold=0.0)
    results = callback.explain_detections(trainer, module)
    assert [r.image_size for r in results] == [(64, 96), (64, 80)]
    for image, result in zip(images, results, strict=True):
        expected = direct(image)
        torch.testing.assert_close(result.map(), expected.map())
        torch.testing.assert_close(result.scores, expected.scores)
    # the probes' targets are the batch's labels in pixels (what the pointing game reads)
    probes = callback.probe_set("det_probes").data
    for i, (_, target) in enumerate(probes):
        torch.testing.assert_close(target["boxes"], torch.tensor([[10.0 + i, 8.0, 40.0 + i, 28.0]]),
                                   atol=1e-4, rtol=0)
        assert target["labels"].tolist() == [1 + i]
