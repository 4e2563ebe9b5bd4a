"""captum's attributions through lightning-cam against the same captum call made directly.

For every registry method of kind ``attribution``: the median time of ``lc.<Class>(model)(x,
ids)`` (the engine's forward for the class ids, then captum) and of the plain captum call with
the same settings, side by side in one run, and the largest difference of the maps (ours
``normalize=False`` against captum's attribution reduced as ours). Seeded, CPU by default.

Usage:
    python benchmarks/attributions.py [--model resnet18] [--size 64] [--batch 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning_cam as lc  # noqa: E402
from lightning_cam.methods import METHODS  # noqa: E402
from lightning_cam.methods.attribution import (  # noqa: E402
    IG_STEPS,
    NOISE_LEVEL,
    NOISE_SAMPLES,
    SHAP_SAMPLES,
    reduce_channels,
    shap_baselines,
)


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _captum(name: str, model: torch.nn.Module, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The plain captum call of each method (per image for the random ones, as ours)."""
    import captum.attr as ca

    x = x.clone().requires_grad_(True)
    if name == "saliency":
        return reduce_channels(ca.Saliency(model).attribute(x, target=ids), "abs")
    if name == "integrated_gradients":
        a = ca.IntegratedGradients(model).attribute(x, target=ids, n_steps=IG_STEPS)
        return reduce_channels(a, "positive")
    if name == "deeplift":
        return reduce_channels(ca.DeepLift(model).attribute(x, target=ids), "positive")
    if name == "occlusion":
        w = max(1, min(x.shape[2:]) // 8)
        a = ca.Occlusion(model).attribute(x, sliding_window_shapes=(x.shape[1], w, w),
                                          strides=(x.shape[1], w // 2 or 1, w // 2 or 1),
                                          target=ids, perturbations_per_eval=64)
        return reduce_channels(a, "positive")
    outs = []
    for i in range(len(x)):
        xi, ci = x[i : i + 1], ids[i : i + 1]
        torch.manual_seed(0)
        if name == "gradient_shap":
            import numpy as np

            np.random.seed(0)
            a = ca.GradientShap(model).attribute(xi, baselines=shap_baselines(xi.detach()),
                                                 n_samples=SHAP_SAMPLES, target=ci)
            outs.append(reduce_channels(a, "positive"))
        else:
            sigma = float(NOISE_LEVEL * (xi.detach().max() - xi.detach().min()))
            a = ca.NoiseTunnel(ca.Saliency(model)).attribute(
                xi, nt_type=name, nt_samples=NOISE_SAMPLES, stdevs=sigma, target=ci, abs=False)
            outs.append(reduce_channels(a, "abs"))
    return torch.cat(outs)


def main(argv: list[str] | None = None) -> str:
    import torchvision

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=None).eval()
    x = torch.rand(args.batch, 3, args.size, args.size)
    with torch.no_grad():
        ids = model(x).argmax(1)
    forward = _median_ms(lambda: model(x), args.repeats)
    lines = [
        f"Attributions: {args.model} (weights=None, eval), {args.batch} x 3 x {args.size}², CPU, "
        f"{args.threads} thread(s), median of {args.repeats}; a no-grad forward {forward:.1f} ms.",
        "",
        "| method | ours (ms) | captum direct (ms) | ours / captum | max abs map difference |",
        "|---|---|---|---|---|",
    ]
    for name, m in METHODS.items():
        if m.compute.__module__ != "lightning_cam.methods.attribution":  # captum's only
            continue
        cls = getattr(lc, m.class_name)(model, normalize=False)
        try:
            cls(x, target=ids)
        except ValueError as err:
            lines.append(f"| {m.title} (`{name}`) | refused: {str(err).split(': ', 1)[-1][:90]}"
                         " | | | |")
            continue
        ours = _median_ms(lambda cls=cls: cls(x, target=ids), args.repeats)
        peer = _median_ms(lambda name=name: _captum(name, model, x, ids), args.repeats)
        diff = float((cls(x, target=ids) - _captum(name, model, x, ids)).abs().max())
        lines.append(f"| {m.title} (`{name}`) | {ours:.1f} | {peer:.1f} | {ours / peer:.2f} | "
                     f"{diff:.1e} |")
        print(lines[-1], file=sys.stderr, flush=True)
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
