"""Per-detection CAMs of an ultralytics YOLO: lightning-cam against the community recipe and
pytorch-grad-cam's EigenCAM, side by side in one run.

Cases (one image, the same letterboxed input, ``K`` detections; medians of ``--reps`` rounds,
the cases interleaved in every round, each timed call right after an untimed one of the same case):

* **no-grad forward**: ``with torch.no_grad(): model(x)``: the floor, nothing cheaper gives the
  detections;
* **ours**: :class:`~lightning_cam.detection.yolo.YOLOExplainer` (Grad-CAM at the neck, the
  three scales summed): letterbox, one forward, NMS with anchors, one batched backward for the
  ``K`` detections, maps to the image;
* **community recipe**: what the "Grad-CAM for YOLOv8" scripts do: hooks on the same three neck
  layers, one recorded forward (parameters requiring grad), NMS, then per detection
  ``model.zero_grad(); score.backward(retain_graph=True)`` and a Grad-CAM from the hooked
  gradients: ``K`` backwards (and parameter gradients written);
* **pytorch-grad-cam EigenCAM**: ``EigenCAM(model, target_layers=<the three neck layers>)`` on
  a wrapper returning the raw predictions (EigenCAM needs no backward, and gives one map for the
  image, not one per detection); made per call in a ``with`` block, so that its hooks are not
  left on the model during the other cases.

Run (from the repository root; ``--threads 1`` on a shared machine)::

    python benchmarks/detection_yolo.py                       # yolov8n, 320 px, K = 10
    python benchmarks/detection_yolo.py --cfg yolo11n.yaml --imgsz 640 --reps 7

The markdown table is printed and written to ``--out`` (default
``benchmarks/detection_yolo.md``).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))
os.environ.setdefault("YOLO_OFFLINE", "1")

from lightning_cam.detection.yolo import YOLOExplainer, load_yolo, yolo_neck_layers  # noqa: E402
from lightning_cam.detection.yolo_ops import letterbox, nms_with_anchors  # noqa: E402
from lightning_cam.engine.layers import get_layer  # noqa: E402


def build(cfg: str, seed: int) -> Any:
    """A random-init model whose class scores are spread (random heads score every anchor the
    same), so that K detections survive NMS."""
    torch.manual_seed(seed)
    model = load_yolo(cfg).eval()
    with torch.no_grad():
        for seq in model.model[-1].cv3:
            seq[-1].bias.normal_(-2.0, 1.5)
    return model


def community_recipe(model: Any, x: torch.Tensor, k: int) -> list[torch.Tensor]:
    """One recorded forward, then per box ``zero_grad`` + ``backward(retain_graph=True)``."""
    layers = yolo_neck_layers(model)
    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(_m: Any, _i: Any, out: torch.Tensor) -> None:
            acts[name] = out
            out.register_hook(lambda g: grads.__setitem__(name, g))
        return hook

    handles = [get_layer(model, n).register_forward_hook(keep(n)) for n in layers]
    try:
        y = model(x)[0]
        det = nms_with_anchors(y[0].detach(), 0.0, 0.7)
        maps = []
        for a, c in zip(det.anchors[:k].tolist(), det.labels[:k].tolist(), strict=True):
            model.zero_grad()
            y[0, 4 + c, a].backward(retain_graph=True)
            cam = sum(
                F.interpolate(F.relu((grads[n].mean((2, 3), keepdim=True) * acts[n]).sum(1,
                              keepdim=True)), size=x.shape[-2:], mode="bilinear")
                for n in layers
            )
            maps.append(cam.detach())
        return maps
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)


def eigencam_case(model: Any, x: torch.Tensor) -> Callable[[], Any] | str:
    """pytorch-grad-cam's EigenCAM on the neck layers, or why it does not run."""
    try:
        from pytorch_grad_cam import EigenCAM
    except ImportError as err:
        return f"not installed ({err})"

    class Raw(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return self.model(inp)[0]

    wrapper = Raw().eval()
    layers = [get_layer(model, n) for n in yolo_neck_layers(model)]

    def run() -> Any:
        # its hooks live for the call only: a CAM object kept alive leaves them on the model,
        # storing every later forward's activations (the other cases' too) until its next call
        with EigenCAM(wrapper, target_layers=layers) as cam:
            return cam(x, targets=None)

    try:
        run()
    except Exception as err:  # noqa: BLE001 - a peer's failure is reported, not raised
        return f"fails: {type(err).__name__}: {err}"
    return run


def measure(
    cases: dict[str, Callable[[], Any]], reps: int, warmup: int
) -> dict[str, tuple[float, float]]:
    """(median, min) seconds per case, the cases interleaved each round; each timed call right
    after an untimed one of its own case, so that each is timed in its own steady state
    (caches, allocator), not in the one the case before it left; garbage collected before and
    not during a timed call, as ``timeit`` does (garbage another case left is not collected
    inside this one's timing)."""
    times: dict[str, list[float]] = {n: [] for n in cases}
    for r in range(warmup + reps):
        for name, fn in cases.items():
            fn()
            gc.collect()
            gc.disable()
            try:
                t = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - t
            finally:
                gc.enable()
            if r >= warmup:
                times[name].append(elapsed)
    return {n: (statistics.median(v), min(v)) for n, v in times.items()}


def _limit_blas_threads(threads: int) -> None:
    """numpy's BLAS (EigenCAM's SVD) to ``threads`` too: OpenBLAS's own threads otherwise
    spin after each SVD, on the cores the next case (the no-grad forward) runs on."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(threads)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="yolov8n.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "detection_yolo.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    _limit_blas_threads(args.threads)
    model = build(args.cfg, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    h, w = args.imgsz * 3 // 4, args.imgsz
    image = torch.rand(3, h, w, generator=g)
    x, _ = letterbox(image, args.imgsz)
    x = x[None]
    explainer = YOLOExplainer(model, methods="gradcam", score_threshold=0.0, top_k=args.k,
                              imgsz=args.imgsz)
    k = len(explainer(image))

    def no_grad() -> None:
        with torch.no_grad():
            model(x)

    cases: dict[str, Callable[[], Any]] = {
        "no-grad forward": no_grad,
        f"ours: YOLOExplainer, Grad-CAM, K = {k}": lambda: explainer(image),
        f"community recipe: {k} backwards (zero_grad + backward per box)":
            lambda: community_recipe(model, x, args.k),
    }
    eigen = eigencam_case(model, x)
    eigen_name = "pytorch-grad-cam EigenCAM (one map for the image)"
    if callable(eigen):
        cases[eigen_name] = eigen
    load0 = os.getloadavg()[0]
    medians = measure(cases, args.reps, args.warmup)
    load1 = os.getloadavg()[0]
    floor = medians["no-grad forward"]
    lines = [
        "# Per-detection CAMs of a YOLO: time per image",
        "",
        f"`python benchmarks/detection_yolo.py --cfg {args.cfg} --imgsz {args.imgsz} --k "
        f"{args.k} --reps {args.reps} --threads {args.threads}` ({datetime.date.today()}, "
        f"torch {torch.__version__}, CPU, {args.threads} thread(s), load average "
        f"{load0:.1f} -> {load1:.1f}). {args.cfg} random-init (class biases spread so that "
        f"{k} detections survive NMS), one {h} x {w} image letterboxed to "
        f"{tuple(x.shape[-2:])}; medians and minima of {args.reps} interleaved rounds (on a "
        "loaded machine the minimum is the steadier figure).",
        "",
        "| case | median ms | x no-grad forward | min ms | x no-grad forward (min) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (med, low) in medians.items():
        lines.append(f"| {name} | {med * 1e3:.1f} | {med / floor[0]:.2f} | {low * 1e3:.1f} | "
                     f"{low / floor[1]:.2f} |")
    if not callable(eigen):
        lines.append(f"| {eigen_name} | {eigen} | | | |")
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
