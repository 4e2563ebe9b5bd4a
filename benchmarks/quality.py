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

plus a uniform random map as the chance level. Maps: the methods' own, upsampled to the image
and min-max normalised. A method that refuses the model is listed with its reason.

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

COLUMNS = ("pointing", "energy", "avg_drop", "increase", "deletion", "insertion")
HEADERS = ("pointing game ↑", "energy pointing ↑", "avg drop % ↓", "increase % ↑",
           "deletion AUC ↓", "insertion AUC ↑")


def score(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
          maps: torch.Tensor, batch: int) -> dict[str, float]:
    drop, inc = M.average_drop_increase(model, images, maps, labels, batch_size=batch)
    dele, ins = M.deletion_insertion_auc(model, images, maps, labels, steps=16, batch_size=batch)
    return {
        "pointing": float(M.pointing_game(maps, masks).mean()),
        "energy": float(M.energy_pointing_game(maps, masks).mean()),
        "avg_drop": float(drop.mean()),
        "increase": float(100 * inc.float().mean()),
        "deletion": float(dele.mean()),
        "insertion": float(ins.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="lightning_logs/shapes/version_*/checkpoints/*.ckpt",
                   help="checkpoint of the trained shapes classifier (glob; the newest match)")
    p.add_argument("--num", type=int, default=200, help="test images (default %(default)s)")
    p.add_argument("--layer", default="backbone", help="explained layer (default %(default)s)")
    p.add_argument("--batch", type=int, default=64, help="images per forward")
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
    rows: list[tuple[str, str, dict[str, float] | str, float]] = []
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
        rows.append((m.title, m.kind, score(model, images, masks, labels, maps, args.batch),
                     secs))
        print(f"{name}: {rows[-1][2]}", file=sys.stderr, flush=True)
    rand = torch.rand(images.shape[0], *images.shape[2:], generator=torch.Generator()
                      .manual_seed(0))
    rows.append(("random map (chance)", "—", score(model, images, masks, labels, rand,
                                                   args.batch), 0.0))
    lines = [
        "## Explanation quality on the shapes data",
        "",
        f"- {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"`python benchmarks/quality.py --num {args.num} --layer {args.layer}` on "
        f"`{Path(found[-1]).name}` (`lightning-cam fit --config configs/shapes.yaml`); test "
        f"accuracy on these images {acc:.1%}.",
        f"- The first {args.num} images of the shapes test split (64 x 64, one object, "
        "distractors), explained for their ground-truth class at layer "
        f"`{args.layer}` (8 x 8); metrics against the ground-truth masks (see the header of "
        "`benchmarks/quality.py`); ms / image: the explanation alone, on this machine's CPU.",
        "",
        "| method | kind | " + " | ".join(HEADERS) + " | ms / image |",
        "|---|---|" + "---:|" * (len(HEADERS) + 1),
    ]
    for title, kind, res, secs in rows:
        if isinstance(res, str):
            lines.append(f"| {title} | {kind} | {res} |" + " |" * len(HEADERS))
            continue
        vals = " | ".join(
            f"{res[c]:.3f}" if c in ("pointing", "energy", "deletion", "insertion")
            else f"{res[c]:.1f}" for c in COLUMNS)
        ms = f"{1e3 * secs / args.num:.2f}" if secs else "—"
        lines.append(f"| {title} | {kind} | {vals} | {ms} |")
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
