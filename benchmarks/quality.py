"""Explanation quality of every registered method on the embedded shapes data.

The trained default classifier (``lightning-cam fit --config configs/shapes.yaml``: the compact
CNN, layer ``backbone``) explains the first ``--num`` images of the shapes *test* split for
their ground-truth class; every method of :data:`lightning_cam.methods.METHODS` is scored with
the metrics of :mod:`lightning_cam.metrics` against the ground-truth masks:

- pointing game (the map's maximum on the object; higher is better),
- energy pointing game (the share of the map's mass on the object; higher is better),
- average drop % (lower is better) and increase in confidence % (higher is better) of the
  image masked by the map (Grad-CAM++),
- deletion AUC (lower is better) and insertion AUC (higher is better), 16 steps, zero baseline
  (RISE),
- average gain % (Opti-CAM; higher is better) of the same masked image,
- ROAD (Rong et al., ICML 2022): the class probability after removing the p % most (MoRF, lower
  is better) or least (LeRF, higher is better) relevant pixels by noisy linear imputation (noise
  0.01, seed 0), at ``--percentages`` (default :data:`lightning_cam.metrics.ROAD_PERCENTAGES`),
  their mean in the main table and each percentage in two more tables,

plus a uniform random map as the chance level. Maps: the methods' own, upsampled to the image
and min-max normalised. A method that refuses the model is listed with its reason. Class scores
are softmax probabilities (``--raw-scores``: ROAD on the raw logits instead, as torchcam and
pytorch-grad-cam's ``ClassifierOutputTarget`` score).

ROAD's speed is measured in the same run against pytorch-grad-cam's (``metrics/road.py``,
MoRF + LeRF averagers over the same percentages, one image and one percentage at a time): on the
first ``--speed-images`` shapes images with Grad-CAM's maps, and on ``--speed-images`` random
224 x 224 images with a torchvision ResNet-18 (``weights=None``) and smooth random maps.

Run (from the repository root)::

    lightning-cam fit --config configs/shapes.yaml      # ~1 min on a CPU
    python benchmarks/quality.py --ckpt lightning_logs/shapes/version_0/checkpoints/*.ckpt

Writes the markdown table to ``--out`` (default ``benchmarks/quality.md``; ``run.py`` appends it
to ``benchmarks/results.md``) and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import importlib.util
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("lightning_cam") is None:  # run from a checkout, not installed
    sys.path.insert(0, str(REPO))

import lightning_cam as lc  # noqa: E402
from lightning_cam import metrics as M  # noqa: E402
from lightning_cam.methods import METHODS  # noqa: E402

COLUMNS = ("pointing", "energy", "avg_drop", "increase", "gain", "deletion", "insertion",
           "road_morf", "road_lerf")
HEADERS = ("pointing game ↑", "energy pointing ↑", "avg drop % ↓", "increase % ↑",
           "avg gain % ↑", "deletion AUC ↓", "insertion AUC ↑", "ROAD MoRF ↓", "ROAD LeRF ↑")
#: Columns printed with 3 decimals (the others are percentages, 1 decimal).
FINE = ("pointing", "energy", "deletion", "insertion", "road_morf", "road_lerf")

Scores = dict[str, float | list[float]]


def score(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
          maps: torch.Tensor, batch: int, percentages: list[float], raw: bool) -> Scores:
    drop, inc, gain = M.average_drop_increase_gain(model, images, maps, labels, batch_size=batch)
    dele, ins = M.deletion_insertion_auc(model, images, maps, labels, steps=16, batch_size=batch)
    road = M.road(model, images, maps, labels, percentages, raw_scores=raw, batch_size=batch)
    return {
        "pointing": float(M.pointing_game(maps, masks).mean()),
        "energy": float(M.energy_pointing_game(maps, masks).mean()),
        "avg_drop": float(drop.mean()),
        "increase": float(100 * inc.float().mean()),
        "gain": float(gain.mean()),
        "deletion": float(dele.mean()),
        "insertion": float(ins.mean()),
        "road_morf": float(road.morf.mean()),
        "road_lerf": float(road.lerf.mean()),
        "morf_curve": road.morf.mean(0).tolist(),
        "lerf_curve": road.lerf.mean(0).tolist(),
    }


def road_speed(model: torch.nn.Module, images: torch.Tensor, maps: torch.Tensor,
               labels: torch.Tensor, percentages: list[float]) -> tuple[float, float]:
    """Seconds per image of our ROAD (MoRF + LeRF, every percentage, forwards included) and of
    pytorch-grad-cam's averagers on the same images, maps and classes."""
    from pytorch_grad_cam.metrics.road import (
        ROADLeastRelevantFirstAverage,
        ROADMostRelevantFirstAverage,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    t0 = time.perf_counter()
    M.road(model, images, maps, labels, percentages)
    ours = (time.perf_counter() - t0) / images.shape[0]
    # pytorch-grad-cam's percentile is the share kept: 100 - p removes p % (both orders).
    kept = [100 - p for p in percentages]
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in labels]
    t0 = time.perf_counter()
    with torch.no_grad():
        for averager in (ROADMostRelevantFirstAverage(kept), ROADLeastRelevantFirstAverage(kept)):
            averager(images, maps.numpy(), targets, model)
    return ours, (time.perf_counter() - t0) / images.shape[0]


def speed_lines(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                layer: str, count: int, percentages: list[float]) -> list[str]:
    """The ROAD timing paragraph: shapes images, then 224 x 224 ResNet-18."""
    import torchvision

    n = min(count, images.shape[0])
    out = lc.explain(model, images[:n], layer, methods=("gradcam",), target=labels[:n])
    small = road_speed(model, images[:n], out.cams["gradcam"][out.layers[0]], labels[:n],
                       percentages)
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    big = torch.rand(count, 3, 224, 224)
    smooth = torch.nn.functional.interpolate(torch.rand(count, 1, 7, 7), size=(224, 224),
                                             mode="bilinear", align_corners=False)[:, 0]
    with torch.no_grad():
        ids = net(big).argmax(1)
    large = road_speed(net, big, smooth, ids, percentages)
    return [
        f"- ROAD's cost ({len(percentages)} percentages x MoRF + LeRF = "
        f"{2 * len(percentages)} imputations and forwards per image, on this machine's CPU, "
        f"torch threads {torch.get_num_threads()}): shapes 64 x 64, {n} images: "
        f"**{1e3 * small[0]:.0f} ms / image** (pytorch-grad-cam's ROAD averagers on the same "
        f"maps: {1e3 * small[1]:.0f} ms, {small[1] / small[0]:.1f} x); ResNet-18 at 224 x 224, "
        f"{count} images: **{large[0]:.2f} s / image** (pytorch-grad-cam: {large[1]:.2f} s, "
        f"{large[1] / large[0]:.1f} x). Ours: one block-diagonal sparse system per image for "
        "all its masks (built with array operations, one SuperLU factorisation), then batched "
        "forwards; theirs: one `lil_matrix` built and solved per image and mask, one forward "
        "per mask.",
    ]


Row = tuple[str, str, Scores | str, float]


def method_rows(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor,
                labels: torch.Tensor, args: argparse.Namespace) -> list[Row]:
    """One row per registered method (its scores, or why it refuses), then the chance level."""
    rows: list[Row] = []
    for name, m in METHODS.items():
        t0 = time.perf_counter()
        try:
            out = lc.explain(model, images, args.layer, methods=(name,), target=labels,
                             max_batch=args.batch)
        except ValueError as err:
            reason = str(err).split(". ")[0]
            reason = reason.split(", but ", 1)[-1]  # the why, without the method's requirement
            rows.append((m.title, m.kind, f"refused: {reason}", 0.0))
            continue
        secs = time.perf_counter() - t0
        maps = out.cams[name][out.layers[0]]
        rows.append((m.title, m.kind, score(model, images, masks, labels, maps, args.batch,
                                            args.percentages, args.raw_scores), secs))
        print(f"{name}: {rows[-1][2]}", file=sys.stderr, flush=True)
    rand = torch.rand(images.shape[0], *images.shape[2:], generator=torch.Generator()
                      .manual_seed(0))
    rows.append(("random map (chance)", "—", score(model, images, masks, labels, rand,
                                                   args.batch, args.percentages,
                                                   args.raw_scores), 0.0))
    return rows


def main_table(rows: list[Row], num: int) -> list[str]:
    lines = [
        "| method | kind | " + " | ".join(HEADERS) + " | ms / image |",
        "|---|---|" + "---:|" * (len(HEADERS) + 1),
    ]
    for title, kind, res, secs in rows:
        if isinstance(res, str):
            lines.append(f"| {title} | {kind} | {res} |" + " |" * len(HEADERS))
            continue
        vals = " | ".join(f"{res[c]:.3f}" if c in FINE else f"{res[c]:.1f}" for c in COLUMNS)
        ms = f"{1e3 * secs / num:.2f}" if secs else "—"
        lines.append(f"| {title} | {kind} | {vals} | {ms} |")
    return lines


def curve_table(rows: list[Row], key: str, percentages: list[float]) -> list[str]:
    lines = [
        "| method | " + " | ".join(f"{p:g} %" for p in percentages) + " |",
        "|---|" + "---:|" * len(percentages),
    ]
    for title, _, res, _ in rows:
        if not isinstance(res, str):
            curve = res[key]
            assert isinstance(curve, list)
            lines.append(f"| {title} | " + " | ".join(f"{v:.3f}" for v in curve) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="lightning_logs/shapes/version_*/checkpoints/*.ckpt",
                   help="checkpoint of the trained shapes classifier (glob; the newest match)")
    p.add_argument("--num", type=int, default=200, help="test images (default %(default)s)")
    p.add_argument("--layer", default="backbone", help="explained layer (default %(default)s)")
    p.add_argument("--batch", type=int, default=64, help="images per forward")
    p.add_argument("--percentages", type=float, nargs="+", default=list(M.ROAD_PERCENTAGES),
                   help="ROAD's removed percentages (default %(default)s)")
    p.add_argument("--raw-scores", action="store_true",
                   help="ROAD on raw logits instead of softmax probabilities")
    p.add_argument("--speed-images", type=int, default=4,
                   help="images of the ROAD timing against pytorch-grad-cam (0: skip)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "quality.md"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    found = sorted(glob.glob(args.ckpt), key=lambda f: Path(f).stat().st_mtime)
    if not found:
        raise SystemExit(f"no checkpoint matches {args.ckpt!r}: train one with "
                         "`lightning-cam fit --config configs/shapes.yaml` first")
    from lightning_cam.data import ShapesDataModule
    from lightning_cam.models import ShapesClassifier

    model = ShapesClassifier.load_from_checkpoint(found[-1], map_location="cpu").eval()
    ds = ShapesDataModule(num_test=max(args.num, 1)).dataset("test")
    items = [ds[i] for i in range(args.num)]
    images = torch.stack([s["image"] for s in items])
    masks = torch.stack([s["mask"] for s in items])
    labels = torch.stack([s["label"] for s in items])
    with torch.no_grad():
        acc = float((model(images).argmax(1) == labels).float().mean())
    rows = method_rows(model, images, masks, labels, args)
    scores = "raw logits" if args.raw_scores else "softmax probabilities"
    pct = " ".join(f"{v:g}" for v in args.percentages)
    lines = [
        "## Explanation quality on the shapes data",
        "",
        f"- {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"`python benchmarks/quality.py --num {args.num} --layer {args.layer} --percentages "
        f"{pct}{' --raw-scores' if args.raw_scores else ''}` on "
        f"`{Path(found[-1]).name}` (`lightning-cam fit --config configs/shapes.yaml`); test "
        f"accuracy on these images {acc:.1%}.",
        f"- The first {args.num} images of the shapes test split (64 x 64, one object, "
        "distractors), explained for their ground-truth class at layer "
        f"`{args.layer}` (8 x 8); metrics against the ground-truth masks (see the header of "
        "`benchmarks/quality.py`); ms / image: the explanation alone, on this machine's CPU.",
        f"- Class scores: {scores} (average drop, increase and gain always probabilities). "
        f"ROAD: noisy linear imputation, noise 0.01, seed 0; MoRF / LeRF columns: the mean "
        f"over the percentages {pct}.",
    ]
    if args.speed_images:
        lines += speed_lines(model, images, labels, args.layer, args.speed_images,
                             args.percentages)
    lines += ["", *main_table(rows, args.num), "",
              f"ROAD MoRF ({scores} of the class after removing the p % most relevant pixels; "
              "lower is better):", "", *curve_table(rows, "morf_curve", args.percentages), "",
              "ROAD LeRF (after removing the p % least relevant pixels; higher is better):", "",
              *curve_table(rows, "lerf_curve", args.percentages)]
    lines += [
        "",
        "Reading the table: the default classifier's head is global *max* pooling + linear, so "
        "the gradient of a class score w.r.t. `backbone` is non-zero at one position per "
        "channel (its maximum, where A > 0): there Layer-CAM's ReLU(g) A equals element-wise "
        "Grad-CAM's ReLU(g A), and Smooth Grad-CAM++'s noise-averaged derivatives cancel in "
        "alpha = D2 / (2 D2 + sum(A) D3) (each is W^n times the share of samples whose maximum "
        "sits there), leaving Grad-CAM++ exactly; CAM is refused (its head check fails: not "
        "global *average* pooling).",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
