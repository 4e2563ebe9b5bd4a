"""Multi-label, regression, embedding and CLIP targets (issue 22): maps checked against
hand computations on tiny models (conv -> ReLU -> global average pool -> linear), not shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightning_cam as lc
from lightning_cam.engine.layouts import fold_tokens
from lightning_cam.engine.multilabel import explain_multilabel
from lightning_cam.engine.targets import (
    CLIPImageEmbedder,
    EmbeddingTarget,
    MultiLabelTarget,
    RegressionTarget,
    TextSimilarityTarget,
    clip_text_embeddings,
    multilabel_pairs,
)


class GapNet(nn.Module):
    """conv -> ReLU ("act", the explained layer) -> GAP -> linear (B, out)."""

    def __init__(self, out: int, seed: int = 0, squeeze: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, out)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.squeeze = squeeze

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.features(x).mean((2, 3)))
        return y[:, 0] if self.squeeze else y


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


def hand_gradcam(a: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_c alpha_c A^c): raw Grad-CAM (B, h, w) from weights alpha (B, C)."""
    return torch.relu((alpha[:, :, None, None] * a).sum(1))


def raw(model: nn.Module, x: torch.Tensor, target: object, **kw: object) -> lc.Explanation:
    return lc.explain(
        model, x, "act", methods=["gradcam"], target=target, normalize=False, upsample=False,
        **kw,  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------------- multi-label


def test_multilabel_target_sums_the_positive_logits_and_its_map_is_the_summed_weights() -> None:
    net, x = GapNet(5), images()
    with torch.no_grad():
        z, a = net(x), net.features(x)
    positive = torch.sigmoid(z) > 0.3
    assert positive.any(1).all() and (positive.sum(1) < 5).all()
    target = MultiLabelTarget(threshold=0.3)
    out = raw(net, x, target)
    torch.testing.assert_close(out.scores, (z * positive).sum(1))
    hw = a.shape[2] * a.shape[3]
    alpha = (positive.float() @ net.fc.weight.detach()) / hw  # d(sum_k z_k)/dA = sum_k W_k / hw
    torch.testing.assert_close(out.cam(), hand_gradcam(a, alpha))
    assert torch.equal(target.last_labels, positive)


def test_multilabel_target_with_label_sets_and_max_batch() -> None:
    net, x = GapNet(4), images(4)
    labels = [2, [0, 3], [], [1, 2]]
    whole = raw(net, x, MultiLabelTarget(labels))
    split = raw(net, x, MultiLabelTarget(labels), max_batch=3)
    torch.testing.assert_close(split.cam(), whole.cam())
    torch.testing.assert_close(split.scores, whole.scores)
    with torch.no_grad():
        z = net(x)
    torch.testing.assert_close(
        whole.scores, torch.stack([z[0, 2], z[1, 0] + z[1, 3], z[0, 0] * 0, z[3, 1] + z[3, 2]])
    )
    assert torch.all(whole.cam()[2] == 0)  # no label: a zero score, an all-zero map
    mask = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0]])
    torch.testing.assert_close(raw(net, x, MultiLabelTarget(mask)).cam(), whole.cam())


def test_multilabel_pairs() -> None:
    z = torch.tensor([[3.0, -1.0, 0.2], [-2.0, -3.0, -4.0], [1.0, 2.0, -1.0]])
    rows, ids = multilabel_pairs(z)
    assert rows.tolist() == [0, 0, 2, 2] and ids.tolist() == [0, 2, 0, 1]
    rows, ids = multilabel_pairs(z, threshold=0.85)
    assert rows.tolist() == [0, 2] and ids.tolist() == [0, 1]
    rows, ids = multilabel_pairs(z, labels=[[1], 2, []])
    assert rows.tolist() == [0, 1] and ids.tolist() == [1, 2]
    with pytest.raises(ValueError, match="out of range"):
        multilabel_pairs(z, labels=3)
    with pytest.raises(ValueError, match="entries but the batch has 3"):
        multilabel_pairs(z, labels=[1, 2])
    with pytest.raises(ValueError, match="threshold"):
        multilabel_pairs(z, threshold=1.0)
    with pytest.raises(TypeError, match="label set"):
        multilabel_pairs(z, labels=[1.5, 2, 0])


class Counter:
    def __init__(self, model: nn.Module) -> None:
        self.calls = 0
        model.register_forward_hook(self.hook)

    def hook(self, *_: object) -> None:
        self.calls += 1


def test_explain_multilabel_one_map_per_positive_label() -> None:
    net, x = GapNet(5, seed=3), images(3, seed=4)
    with torch.no_grad():
        z, a = net(x), net.features(x)
    positive = torch.sigmoid(z) > 0.5
    counter = Counter(net)
    out = explain_multilabel(net, x, "act", methods=["gradcam"], normalize=False, upsample=False)
    assert counter.calls == 2  # the no-grad forward reading the labels, then one explain forward
    rows, ids = positive.nonzero(as_tuple=True)
    assert out.pairs() == list(zip(rows.tolist(), ids.tolist(), strict=True))
    assert out.explanation is not None and out.explanation.scores is not None
    torch.testing.assert_close(out.explanation.scores, z[rows, ids])  # the logit, not sigmoid
    hw = a.shape[2] * a.shape[3]
    for (i, k) in out.pairs():
        expected = hand_gradcam(a[i : i + 1], net.fc.weight.detach()[k][None] / hw)[0]
        torch.testing.assert_close(out.cam(i, k), expected)
    with pytest.raises(KeyError):
        out.cam(0, int((~positive[0]).nonzero()[0]))
    # given labels: no label-reading forward; max_batch gives the same maps
    counter.calls = 0
    given = explain_multilabel(
        net, x, "act", methods=["gradcam"], labels=[[0, 4], 1, []], normalize=False,
        upsample=False, max_batch=2,
    )
    assert counter.calls == 2 and given.pairs() == [(0, 0), (0, 4), (1, 1)]  # 3 pairs, 2 chunks
    for (i, k) in given.pairs():
        expected = hand_gradcam(a[i : i + 1], net.fc.weight.detach()[k][None] / hw)[0]
        torch.testing.assert_close(given.cam(i, k), expected)


def test_explain_multilabel_guided_per_pair_is_the_labels_own() -> None:
    """Guided backprop and guided Grad-CAM per pair: those of each label's own class target
    (one guided backward over the same forward)."""
    net, x = GapNet(4, seed=3), images(2, seed=4)
    out = explain_multilabel(net, x, "act", methods=["gradcam"], labels=[[0, 2], 3],
                             guided_gradcam=True)  # fmt: skip
    assert out.explanation is not None and out.explanation.guided is not None
    for p, (i, k) in enumerate(out.pairs()):
        one = lc.explain(net, x[i : i + 1], "act", methods=["gradcam"], target=k,
                         guided_gradcam=True)  # fmt: skip
        assert one.guided is not None
        torch.testing.assert_close(out.explanation.guided[p], one.guided[0])
        torch.testing.assert_close(
            out.explanation.guided_cams["gradcam"]["act"][p], one.guided_cams["gradcam"]["act"][0]
        )


def test_explain_multilabel_class_only_methods_and_edge_cases() -> None:
    net, x = GapNet(4, seed=5), images(2, seed=6)
    out = explain_multilabel(net, x, "act", methods=["scorecam"], labels=[[1, 3], 2])
    for (i, k) in out.pairs():
        single = lc.explain(net, x[i : i + 1], "act", methods=["scorecam"], target=k)
        torch.testing.assert_close(out.cam(i, k, "scorecam"), single.cam("scorecam")[0])
    empty = explain_multilabel(net, x, "act", labels=[[], []])
    assert empty.pairs() == [] and empty.explanation is not None and not empty.explanation.cams
    with pytest.raises(ValueError, match="single-logit"):
        explain_multilabel(GapNet(1), x, "act")
    with pytest.raises(ValueError, match="single-logit"):
        explain_multilabel(GapNet(1), x, "act", labels=0)


# ----------------------------------------------------------------------------- regression


@pytest.mark.parametrize("squeeze", [False, True])
def test_regression_decrease_is_the_map_of_the_negated_weights(squeeze: bool) -> None:
    net, x = GapNet(3 if not squeeze else 1, seed=7, squeeze=squeeze), images(3, seed=8)
    index = 0 if squeeze else 2
    with torch.no_grad():
        a, y = net.features(x), net(x)
    w = net.fc.weight.detach()[index]
    hw = a.shape[2] * a.shape[3]
    for direction, sign in (("output", 1.0), ("increase", 1.0), ("decrease", -1.0)):
        out = raw(net, x, RegressionTarget(index, direction))  # type: ignore[arg-type]
        value = y if squeeze else y[:, index]
        torch.testing.assert_close(out.scores, sign * value)
        torch.testing.assert_close(out.cam(), hand_gradcam(a, sign * w.expand(3, -1) / hw))
    negated = GapNet(3 if not squeeze else 1, seed=7, squeeze=squeeze)
    with torch.no_grad():
        negated.fc.weight.neg_()
        negated.fc.bias.neg_()
    torch.testing.assert_close(
        raw(net, x, RegressionTarget(index, "decrease")).cam(),
        raw(negated, x, RegressionTarget(index)).cam(),
    )
    assert all(p.grad is None for p in net.parameters())


def test_regression_per_image_index_and_errors() -> None:
    net, x = GapNet(3, seed=9), images(4, seed=10)
    target = RegressionTarget([0, 2, 1, 2], "decrease")
    whole, split = raw(net, x, target), raw(net, x, target, max_batch=3)
    torch.testing.assert_close(split.cam(), whole.cam())
    with torch.no_grad():
        y = net(x)
    torch.testing.assert_close(whole.scores, -y[torch.arange(4), torch.tensor([0, 2, 1, 2])])
    with pytest.raises(ValueError, match="direction"):
        RegressionTarget(0, "up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        RegressionTarget(3)(y)
    with pytest.raises(TypeError, match="index"):
        RegressionTarget(1.0)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- embeddings


def test_embedding_target_gradient_identity_and_max_batch() -> None:
    net, x = GapNet(5, seed=11), images(4, seed=12)
    refs = torch.randn(4, 5, generator=torch.Generator().manual_seed(13))
    # hand computation: the same forward written out, the cosine's gradient by autograd
    a = F.relu(F.conv2d(x, net.conv.weight.detach(), net.conv.bias.detach(), padding=1))
    a.requires_grad_(True)
    e = a.mean((2, 3)) @ net.fc.weight.detach().T + net.fc.bias.detach()
    cos = (e * refs).sum(1) / (e.norm(dim=1) * refs.norm(dim=1))
    (g,) = torch.autograd.grad(cos.sum(), a)
    expected = hand_gradcam(a.detach(), g.mean((2, 3)))
    whole = raw(net, x, EmbeddingTarget(refs))
    torch.testing.assert_close(whole.scores, cos.detach())
    torch.testing.assert_close(whole.cam(), expected)
    split = raw(net, x, EmbeddingTarget(refs), max_batch=3)
    torch.testing.assert_close(split.cam(), whole.cam())
    torch.testing.assert_close(split.scores, whole.scores)
    # one concept vector for every image: the same as that vector repeated per image
    concept = raw(net, x, EmbeddingTarget(refs[1]), max_batch=3)
    repeated = raw(net, x, EmbeddingTarget(refs[1].expand(4, -1)))
    torch.testing.assert_close(concept.cam(), repeated.cam())
    with pytest.raises(ValueError, match="dimensions"):
        EmbeddingTarget(torch.ones(3))(e)
    with pytest.raises(ValueError, match="per-image reference"):
        EmbeddingTarget(torch.ones(2, 5))(e)
    with pytest.raises(TypeError, match="float tensor"):
        EmbeddingTarget(torch.ones(2, 5, dtype=torch.long))


def test_embedding_of_another_image() -> None:
    """Where image 0 looks like image 1: the reference is image 1's embedding."""
    net, x = GapNet(5, seed=14), images(2, seed=15)
    with torch.no_grad():
        e = net(x)
    out = raw(net, x[:1], EmbeddingTarget(e[1]))
    torch.testing.assert_close(out.scores, F.cosine_similarity(e[:1], e[1:2]))


# ----------------------------------------------------------------------------- CLIP


def tiny_clip() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config={
            "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "vocab_size": 50, "max_position_embeddings": 16,
            "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
        },
        projection_dim=8,
    )
    return transformers.CLIPModel(cfg).eval()


def test_clip_text_similarity_equals_a_brute_force_gradcam() -> None:
    clip = tiny_clip()
    model = CLIPImageEmbedder(clip)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(16))
    ids = torch.randint(2, 50, (2, 6), generator=torch.Generator().manual_seed(17))
    text = clip_text_embeddings(clip, ids)
    scale = clip.logit_scale.exp().detach()
    layer = "clip.vision_model.encoder.layers.0"  # the last block's patch tokens never reach
    target = TextSimilarityTarget(text[1], logit_scale=scale)  # the pooled class token
    out = lc.explain(
        model, x, layer, methods=["gradcam"], target=target, normalize=False, upsample=False,
        reshape_transform=fold_tokens(1, (4, 4)),  # CLIP is not recognised by "auto"/"tokens"
    )
    with torch.no_grad():
        clip_logits = clip(input_ids=ids, pixel_values=x).logits_per_image
    torch.testing.assert_close(out.scores, clip_logits[:, 1])  # CLIP's own image-text logit
    # brute force: hook the block, the score by hand, autograd, fold the tokens by hand
    store: list[torch.Tensor] = []
    handle = clip.vision_model.encoder.layers[0].register_forward_hook(
        lambda _m, _i, o: store.append(o)
    )
    try:
        feats = clip.get_image_features(pixel_values=x)
        feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
        score = scale * F.cosine_similarity(feats, text[1][None].expand_as(feats), dim=1)
        (g,) = torch.autograd.grad(score.sum(), store[0])
    finally:
        handle.remove()

    def fold(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:].reshape(2, 4, 4, 16).permute(0, 3, 1, 2)

    expected = hand_gradcam(fold(store[0].detach()), fold(g).mean((2, 3)))
    assert expected.flatten(1).amax(1).gt(0).all()
    torch.testing.assert_close(out.cam(), expected, rtol=1e-4, atol=1e-6)
    # per-image texts, split into chunks: the same as one pass
    per_image = TextSimilarityTarget(text)
    kw = {"methods": ["gradcam"], "reshape_transform": fold_tokens(1, (4, 4))}
    torch.testing.assert_close(
        lc.explain(model, x, layer, target=per_image, max_batch=1, **kw).cam(),  # type: ignore[arg-type]
        lc.explain(model, x, layer, target=per_image, **kw).cam(),  # type: ignore[arg-type]
    )
    assert all(p.grad is None for p in clip.parameters())


def test_targets_made_under_inference_mode() -> None:
    """Lightning's validate / test loops run under ``torch.inference_mode()``."""
    net, x = GapNet(4, seed=20), images(2, seed=21)
    expected = [
        raw(net, x, t).cam()
        for t in (
            MultiLabelTarget(torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]])),
            RegressionTarget(torch.tensor([1, 2]), "decrease"),
            EmbeddingTarget(torch.linspace(0, 1, 8).view(2, 4)),
        )
    ]
    with torch.inference_mode():
        x_inf = x.clone()
        targets = (
            MultiLabelTarget(torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]])),
            RegressionTarget(torch.tensor([1, 2]), "decrease"),
            EmbeddingTarget(torch.linspace(0, 1, 8).view(2, 4)),
        )
        for t, e in zip(targets, expected, strict=True):
            for max_batch in (None, 1):
                torch.testing.assert_close(raw(net, x_inf, t, max_batch=max_batch).cam(), e)
        out = explain_multilabel(net, x_inf, "act", labels=[[0, 2], 1])
    assert out.pairs() == [(0, 0), (0, 2), (1, 1)]


def test_public_names() -> None:
    for name in (
        "MultiLabelTarget", "RegressionTarget", "EmbeddingTarget", "TextSimilarityTarget",
    ):
        assert getattr(lc, name) is getattr(lc.targets, name)
    assert lc.explain_multilabel is explain_multilabel  # engine/multilabel.py: it runs explain
    import lightning_cam.targets as old_path

    assert old_path is lc.targets and lc.targets.multilabel_pairs is multilabel_pairs
    assert lc.targets.CLIPImageEmbedder is CLIPImageEmbedder


@pytest.mark.parametrize(
    "target",
    [
        MultiLabelTarget([0, [1, 2], 2]),
        RegressionTarget([2, 0, 1], "decrease"),
        EmbeddingTarget(torch.linspace(-1, 1, 3)),
    ],
    ids=["multilabel", "regression", "embedding"],
)
def test_the_method_classes_take_these_targets(target: object) -> None:
    """``lc.GradCAM(...)(x, target=...)`` (normalised, upsampled) is the hand map, normalised."""
    net, x = GapNet(3, seed=18), images(3, seed=19)
    with torch.no_grad():
        a = net.features(x)
    a = a.requires_grad_(True)
    scores = target(net.fc(a.mean((2, 3))))  # type: ignore[operator]
    (g,) = torch.autograd.grad(scores.sum(), a)
    cam = hand_gradcam(a.detach(), g.mean((2, 3)))
    flat = cam.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    expected = torch.where(hi > lo, (flat - lo) / span, torch.zeros_like(flat)).view_as(cam)
    assert bool((hi > lo).any())
    got = lc.GradCAM(net, "act")(x, target=target)  # the layer's size is the image's here
    torch.testing.assert_close(got, expected)


def test_docs_targets_table_lists_every_target_kind() -> None:
    from pathlib import Path

    from lightning_cam.engine import target_kinds

    page = (Path(__file__).resolve().parents[2] / "docs" / "python-api.md").read_text()
    section = page.split("## Targets", 1)[1].split("\n## ", 1)[0]
    for name in target_kinds.__all__:
        if name.endswith("Target") or name == "explain_multilabel":
            assert f"| `{name}(" in section, name


def test_clip_is_a_recognised_family() -> None:
    # "auto" folds CLIP's tokens as fold_tokens(1, grid) does, and the default layer is the
    # vision tower's last layer_norm1 (its input reaches the embedding through every patch)
    clip = tiny_clip()
    model = CLIPImageEmbedder(clip)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ids = torch.randint(2, 50, (2, 6), generator=torch.Generator().manual_seed(4))
    target = TextSimilarityTarget(-clip_text_embeddings(clip, ids)[0])
    layer = "clip.vision_model.encoder.layers.0"
    kw = {"methods": ["gradcam"], "target": target, "normalize": False}
    auto = lc.explain(model, x, layer, **kw)
    by_hand = lc.explain(model, x, layer, reshape_transform=fold_tokens(1, (4, 4)), **kw)
    torch.testing.assert_close(auto.cams["gradcam"][layer], by_hand.cams["gradcam"][layer])
    assert lc.default_layer(model, x) == "clip.vision_model.encoder.layers.1.layer_norm1"
    default = lc.explain(model, x, None, **kw)
    assert default.cams["gradcam"]["clip.vision_model.encoder.layers.1.layer_norm1"].max() > 0
