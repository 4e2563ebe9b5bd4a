"""The methods of 2020-25 (FEM, KPCA-CAM, Seg-Eigen-CAM, Shapley-CAM, Finer-CAM, LeGrad) and
captum's attributions, timed side by side with pytorch-grad-cam in one run.

Three tables: (1) KPCA-CAM's computation alone on activations of 7x7 / 14x14 / 28x28, ReLU'd
noise (the worst case: a top kernel eigenvalue ~2 % above the next) and a resnet18's on
photos (ours: ``kpcacam_map``; pytorch-grad-cam: ``get_2d_projection_kernel``, what its
``KPCA_CAM`` runs);
(2) whole calls on a torchvision model against a no-grad forward, with Shapley-CAM's floor
(forward + backward to the layer + one Hessian-vector product); (3) LeGrad on a torchvision
ViT against its no-grad forward. Median of ``--repeats`` after one warm-up; seeded; CPU.

Usage:
    python benchmarks/recent.py [--size 224] [--batch 2] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning_cam as lc  # noqa: E402
from lightning_cam.methods import METHODS  # noqa: E402
from lightning_cam.methods.core import LayerPass  # noqa: E402
from lightning_cam.methods.recent import kpcacam_map  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _paired(ours: Callable[[], object], peer: Callable[[], object],
            repeats: int) -> tuple[float, float]:
    """The fastest of ``repeats`` interleaved calls of each (ms) after one warm-up: on a shared
    machine the minimum is the steady figure, and interleaving gives both the same load."""
    ours()
    peer()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate((ours, peer)):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], 1000 * (time.perf_counter() - t0))
    return best[0], best[1]


def _photo_activations(batch: int) -> dict[str, torch.Tensor]:
    """resnet18 (``weights=None``) activations of scikit-image's photos at 224 px: ``layer4``
    7x7, ``layer3`` 14x14, ``layer2`` 28x28 (what KPCA-CAM meets in use: structured maps with a
    clear top kernel eigenvalue)."""
    import torchvision
    from skimage import data

    photos = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]
    x = torch.stack([F.interpolate(torch.from_numpy(photos[i % len(photos)]).permute(2, 0, 1)
                                   [None].float() / 255, size=(224, 224))[0]
                     for i in range(batch)])
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    acts: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda _m, _i, o, n=n: acts.__setitem__(n, o.detach())) for n in ("layer4", "layer3",
                                                                          "layer2")]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return acts


def kpca_table(batch: int, repeats: int) -> list[str]:
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    lines = ["| activations | ours (ms) | pytorch-grad-cam (ms) | peer / ours | max abs diff |",
             "|---|---:|---:|---:|---:|"]
    torch.manual_seed(0)
    cases = [(f"ReLU(noise) {batch} x {c} x {n}x{n}", torch.relu(torch.randn(batch, c, n, n)))
             for c, n in ((512, 7), (256, 14), (128, 28))]
    cases += [(f"photos, resnet18 `{name}` {batch} x {a.shape[1]} x {a.shape[2]}x{a.shape[3]}", a)
              for name, a in _photo_activations(batch).items()]
    for label, a in cases:
        ours, peer = _paired(lambda a=a: kpcacam_map(LayerPass(a), sign="peak"),
                             lambda a=a: get_2d_projection_kernel(a.numpy()), repeats)
        diff = (kpcacam_map(LayerPass(a), sign="peak").relu()
                - torch.from_numpy(get_2d_projection_kernel(a.numpy())).relu()).abs().max()
        lines.append(f"| {label} | {ours:.1f} | {peer:.1f} | {peer / ours:.1f} | "
                     f"{float(diff):.1e} |")
    return lines


def _shapley_floor(model: torch.nn.Module, layer: str, x: torch.Tensor,
                   ids: torch.Tensor) -> Callable[[], object]:
    """Forward, gradient to the layer with a graph, one Hessian-vector product: the least any
    Shapley-CAM can do."""
    mod = model.get_submodule(layer)

    def run() -> object:
        keep: list[torch.Tensor] = []
        h = mod.register_forward_hook(lambda _m, _i, o: keep.append(o))
        try:
            out = model(x)
        finally:
            h.remove()
        s = out.gather(1, ids[:, None]).sum()
        (g,) = torch.autograd.grad(s, keep[0], create_graph=True)
        return torch.autograd.grad(g, keep[0], grad_outputs=keep[0].detach(), allow_unused=True)

    return run


def calls_table(size: int, batch: int, repeats: int) -> list[str]:
    import pytorch_grad_cam as pgc
    import torchvision
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        ids = model(x).argmax(1)
    fwd = _ms(lambda: torch.no_grad()(model)(x), repeats)
    targets = [ClassifierOutputTarget(int(i)) for i in ids]
    peers = {"fem": "FEM", "kpcacam": "KPCA_CAM", "segeigencam": "SegEigenCAM",
             "shapleycam": "ShapleyCAM", "finercam": "FinerCAM"}
    lines = [f"resnet18 (weights=None), layer4, {batch} x 3 x {size}², no-grad forward "
             f"{fwd:.0f} ms.", "",
             "| method | ours (ms) | x no-grad fwd | pytorch-grad-cam (ms) | peer / ours |",
             "|---|---:|---:|---:|---:|"]
    floor = _ms(_shapley_floor(model, "layer4", x, ids), repeats)
    lines.append(f"| floor: forward + grad to layer4 + one HVP | {floor:.0f} | "
                 f"{floor / fwd:.2f} | — | — |")
    for name, peer_cls in peers.items():
        ours = _ms(lambda name=name: getattr(lc, METHODS[name].class_name)(model, "layer4")(
            x, target=ids), repeats)
        cam = getattr(pgc, peer_cls)(model=model, target_layers=[model.layer4])
        peer = _ms(lambda cam=cam: cam(input_tensor=x, targets=targets), repeats)
        lines.append(f"| {METHODS[name].title} | {ours:.0f} | {ours / fwd:.2f} | {peer:.0f} | "
                     f"{peer / ours:.2f} |")
    return lines


def legrad_table(batch: int, repeats: int) -> list[str]:
    import torchvision

    torch.manual_seed(0)
    vit = torchvision.models.vit_b_16(weights=None).eval()
    torch.nn.init.normal_(vit.heads.head.weight, std=0.01)
    x = torch.randn(batch, 3, 224, 224)
    fwd = _ms(lambda: torch.no_grad()(vit)(x), repeats)
    ours = _ms(lambda: lc.LeGrad(vit)(x, target=[1] * batch), repeats)
    gc = _ms(lambda: lc.GradCAM(vit)(x, target=[1] * batch), repeats)
    return ["| model | no-grad forward (ms) | LeGrad (ms) | x fwd | Grad-CAM (ms) |",
            "|---|---:|---:|---:|---:|",
            f"| vit_b_16, {batch} x 3 x 224² | {fwd:.0f} | {ours:.0f} | {ours / fwd:.2f} | "
            f"{gc:.0f} |"]


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip", nargs="*", default=[], choices=["kpca", "calls", "legrad"])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = []
    if "kpca" not in args.skip:
        parts += ["KPCA-CAM's computation alone:", "", *kpca_table(args.batch, args.repeats), ""]
    if "calls" not in args.skip:
        parts += [*calls_table(args.size, args.batch, args.repeats), ""]
    if "legrad" not in args.skip:
        parts += [*legrad_table(args.batch, args.repeats), ""]
    text = "\n".join(parts)
    print(text)
    return text


if __name__ == "__main__":
    main()
