"""Time per-detection CAMs of transformers DETR-family detectors, side by side, in one process.

For one image and ``K`` detections of a DETR-family model (random weights, built from a config:
no download), on the same inputs and the same layer:

* ``no-grad forward``: ``with torch.no_grad(): model(pixel_values, pixel_mask)``, the floor;
* ``lightning-cam``: :class:`~lightning_cam.detection.DetrExplainer` end to end (the image
  processor, one forward, the family's post-processing, one batched backward for the ``K``
  detections, maps back on the image);
* ``one backward per box``: the community recipe: one recorded forward, then ``K``
  ``score.backward(retain_graph=True)`` with a gradient hook on the layer;
* ``pytorch-grad-cam``: its ``GradCAM`` called once per box (it explains one target per image
  per call: ``K`` forwards and backwards), when ``grad-cam`` is installed.

Each peer's maps are compared with ours (largest absolute difference of the normalised maps at
the layer's resolution, brought onto the image the same way), so the table also says that the
three compute the same thing.

Run::

    python benchmarks/detection_detr.py                      # DETR and RT-DETR, K = 10
    python benchmarks/detection_detr.py --quick              # tiny models, 1 round
    python benchmarks/detection_detr.py --families detr --out benchmarks/detection_detr.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lightning_cam.detection.base import to_original  # noqa: E402
from lightning_cam.detection.detr import DetrExplainer, detr_family, query_scores  # noqa: E402
from tests.detection.detr_models import tiny_detr  # noqa: E402

#: The layer explained per family: the encoder's input projection of the last level (the
#: backbone's own parameters are frozen by transformers, so peers hooking its output tensors
#: would see no gradient there).
LAYERS = {"detr": "model.input_projection", "rt_detr": "model.encoder_input_proj.2",
          "deformable_detr": "model.input_proj.2", "conditional_detr": "model.input_projection"}

#: A late layer per family (ours only): the backward then runs through the decoder alone (DETR:
#: the last encoder layer's tokens) or the decoder and the last fusion block (RT-DETR).
LATE = {"detr": "model.encoder.layers.-1", "conditional_detr": "model.encoder.layers.-1",
        "rt_detr": "model.encoder.pan_blocks.-1", "deformable_detr": "model.input_proj.2"}


def build(family: str, quick: bool) -> tuple[Any, Any]:
    """A DETR-family model: ResNet-18-like backbone (``width`` 64), d_model 256, 6 + 6 layers,
    100 queries, images of about 320 x 480 (``--quick``: the test suite's tiny model)."""
    if quick:
        return tiny_detr(family)
    model, processor = tiny_detr(family, d_model=256, width=64, layers=6, queries=100)
    if family == "rt_detr":
        processor.size = {"height": 320, "width": 480}
    else:
        processor.size = {"shortest_edge": 320, "longest_edge": 480}
    return model, processor


def timed(fn: Callable[[], Any], reps: int, warmup: int) -> tuple[float, Any]:
    """Median seconds of ``reps`` calls after ``warmup`` calls, and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _recipe(model, x, mask, layer, queries, labels, geometry):
    """One recorded forward, then one ``backward`` per box (the community recipe)."""
    acts: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []

    def hook(_m, _i, o):
        acts.append(o)
        o.register_hook(lambda g: grads.append(g))

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        out = model(pixel_values=x, pixel_mask=mask) if mask is not None else model(pixel_values=x)
    finally:
        handle.remove()
    scores = query_scores(out.logits[0], detr_family(model), queries, labels)
    maps = []
    for k in range(len(queries)):
        grads.clear()
        scores[k].backward(retain_graph=k < len(queries) - 1)
        a, g = acts[0].detach()[0], grads[0][0]
        maps.append(torch.relu((g.mean((1, 2))[:, None, None] * a).sum(0)))
    model.zero_grad(set_to_none=True)
    return to_original(torch.stack(maps), *geometry)


def _pgc(model, x, mask, layer, queries, labels, geometry):
    """pytorch-grad-cam's GradCAM, one call (forward + backward) per box."""
    from pytorch_grad_cam import GradCAM

    family = detr_family(model)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            kwargs = {"pixel_mask": mask} if mask is not None else {}
            return self.model(pixel_values=pixels, **kwargs).logits

    def target(q: int, c: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda logits: query_scores(logits, family, torch.tensor([q]),
                                           torch.tensor([c]))[0]

    maps = []
    with GradCAM(Logits(), [model.get_submodule(layer)]) as cam:
        for q, c in zip(queries.tolist(), labels.tolist(), strict=True):
            grayscale = cam(x, targets=[target(q, c)])  # (1, H', W') numpy, min-max normalised
            maps.append(torch.from_numpy(grayscale[0]))
    padded, resized, size = geometry[1], geometry[0], geometry[2]
    m = torch.stack(maps)[:, : resized[0], : resized[1]]  # pgc resizes to the input canvas
    m = torch.nn.functional.interpolate(m[:, None], size=size, mode="bilinear",
                                        align_corners=False)[:, 0]
    del padded
    return m


def run_family(family: str, k: int, reps: int, warmup: int, quick: bool) -> list[dict[str, Any]]:
    """The rows of one family: seconds, ratio to the floor, agreement with ours."""
    model, processor = build(family, quick)
    layer = LAYERS[family]
    image = torch.rand(3, 400, 600, generator=torch.Generator().manual_seed(0))
    if quick:
        image = image[:, :50, :120]
    explainer = DetrExplainer(model, processor, layer=layer, methods="gradcam",
                              score_threshold=0.0, top_k=k)
    enc = processor(images=image, return_tensors="pt", do_rescale=False)
    x, mask = enc["pixel_values"], enc.get("pixel_mask")
    padded = tuple(x.shape[-2:])
    resized = padded if mask is None else (int(mask[0].any(-1).sum()), int(mask[0].any(-2).sum()))
    geometry = (resized, padded, tuple(image.shape[-2:]))

    def floor() -> Any:
        with torch.no_grad():
            return model(pixel_values=x, pixel_mask=mask) if mask is not None else model(
                pixel_values=x)

    t_pre, _ = timed(lambda: processor(images=image, return_tensors="pt", do_rescale=False),
                     reps, warmup)
    t_floor, _ = timed(floor, reps, warmup)
    t_ours, result = timed(lambda: explainer(image), reps, warmup)
    ours = result.map("gradcam")
    queries, labels = explainer.last_queries, result.labels
    rows = [
        {"case": "no-grad forward (floor)", "s": t_floor, "diff": None},
        {"case": "image processor alone (in ours, not in the floor)", "s": t_pre, "diff": None},
        {"case": f"lightning-cam DetrExplainer, K = {len(result)}, `{layer}`", "s": t_ours,
         "diff": 0.0},
    ]
    late = LATE[family]
    if late != layer:
        index = late.rsplit(".", 1)
        late = f"{index[0]}.{len(model.get_submodule(index[0])) - 1}" if index[1] == "-1" else late
        explainer_late = DetrExplainer(model, processor, layer=late, methods="gradcam",
                                       score_threshold=0.0, top_k=k)
        t_late, _ = timed(lambda: explainer_late(image), reps, warmup)
        rows.append({"case": f"lightning-cam DetrExplainer, K = {len(result)}, `{late}`",
                     "s": t_late, "diff": None})
    model.requires_grad_(True)  # the recipe and pytorch-grad-cam need recorded parameters
    t_rec, rec = timed(lambda: _recipe(model, x, mask, layer, queries, labels, geometry), reps,
                       warmup)
    rows.append({"case": f"one backward per box (K = {len(result)}), `{layer}`", "s": t_rec,
                 "diff": float((rec - ours).abs().max())})
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        rows.append({"case": "pytorch-grad-cam (not installed)", "s": None, "diff": None})
    else:
        t_pgc, pgc = timed(lambda: _pgc(model, x, mask, layer, queries, labels, geometry),
                           max(1, reps // 2), min(warmup, 1))
        rows.append({"case": f"pytorch-grad-cam GradCAM, one call per box, `{layer}`",
                     "s": t_pgc, "diff": float((pgc - ours).abs().max())})
    for r in rows:
        r["family"] = type(model).__name__
        r["x"] = None if r["s"] is None else r["s"] / t_floor
        r["input"] = f"{padded[0]} x {padded[1]}"
    return rows


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """A markdown report of the rows."""
    lines = [
        "# DETR family: per-detection Grad-CAM cost",
        "",
        f"`python benchmarks/detection_detr.py {' '.join(sys.argv[1:])}`".replace("  ", " "),
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical "
        f"CPUs, torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average "
        f"{os.getloadavg()[0]:.1f} at the end. Median of {args.reps} rounds after "
        f"{args.warmup} warm-up (pytorch-grad-cam: {max(1, args.reps // 2)}).",
        "",
        "| model | input | case | seconds | x no-grad forward | max abs diff of maps vs ours |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        s = "n/a" if r["s"] is None else f"{r['s']:.3f}"
        x = "n/a" if r["x"] is None else f"{r['x']:.2f}"
        d = "" if r["diff"] is None else f"{r['diff']:.1e}"
        lines.append(f"| {r['family']} | {r['input']} | {r['case']} | {s} | {x} | {d} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="detr,rt_detr")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.warmup = 1, 0
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    rows: list[dict[str, Any]] = []
    for family in args.families.split(","):
        rows += run_family(family.strip(), args.k, args.reps, args.warmup, args.quick)
    report = render(rows, args)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
