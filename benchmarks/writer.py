"""Benchmarks of ``CAMWriter`` (dataset explanation on ``trainer.predict``), for run.py.

Three measurements, each in fresh subprocesses (``python benchmarks/writer.py worker ...``) so
that DDP can launch its ranks and peak memory is a process's own:

* throughput: images/s of plain ``trainer.predict`` vs the same with ``CAMWriter`` (Grad-CAM +
  Grad-CAM++, maps written, no metrics), interleaved rounds, medians; the shapes classifier at
  64 px and resnet18 (``weights=None``) at 224 px, one process;
* scaling: 2 DDP processes (gloo, 1 thread each) vs 1 process at 1 thread, shapes at 64 px;
* memory: peak resident memory (``ru_maxrss``) of a writer run on N and 10 N images.

The images are pre-rendered tensors (a ``TensorDataset``-like dict dataset), so that both sides
time the model and the writer, not the rendering.

Run alone: ``python benchmarks/writer.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's lightning_cam, also in the workers
    sys.path.insert(0, str(REPO))


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def worker(args: argparse.Namespace) -> None:
    """One timed ``trainer.predict``; rank zero prints ``{"images_per_s", "maxrss_mb"}``."""
    import logging
    import warnings

    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, Dataset

    from lightning_cam.data import ShapesDataset
    from lightning_cam.models import ShapesClassifier
    from lightning_cam.predict import CAMWriter

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model == "shapes":
        model = ShapesClassifier()
        layer = "backbone"
        size = 64
    else:
        model = ShapesClassifier(backbone=args.model, num_classes=10)
        layer = "backbone.layer4"
        size = args.size

    class Images(Dataset):
        """``num`` images, from a pool of 64 pre-rendered ones (constant memory)."""

        def __init__(self, num: int) -> None:
            shapes = ShapesDataset(64, image_size=64, seed=1, cache=False)
            pool = torch.stack([shapes[i]["image"] for i in range(64)])
            if size != 64:
                pool = torch.nn.functional.interpolate(pool, size=(size, size), mode="bilinear")
            self.pool, self.num = pool, num

        def __len__(self) -> int:
            return self.num

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"image": self.pool[i % 64]}

    class Clock(pl.Callback):
        """Times the predict loop itself (after the ranks started), barrier to barrier."""

        def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
            trainer.strategy.barrier()
            self.t0 = time.perf_counter()

        def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
            trainer.strategy.barrier()
            self.wall = time.perf_counter() - self.t0

    clock = Clock()
    callbacks: list[Any] = [clock]
    out = tempfile.mkdtemp(prefix="camwriter-bench-")
    if args.writer:
        callbacks.append(CAMWriter(out, layer=layer, methods=["gradcam", "gradcam++"],
                                   metrics=[]))
    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=args.devices, strategy=args.strategy,
        callbacks=callbacks, logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(Images(args.num), batch_size=args.batch)
    trainer.predict(model, loader, return_predictions=False)
    wall = clock.wall
    if trainer.is_global_zero:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"images_per_s": args.num / wall, "wall_s": wall, "maxrss_mb": rss}))


def _spawn(*extra: str, threads: int = 1) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "worker", *extra,
           "--threads", str(threads)]
    done = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def measure(quick: bool, rounds: int) -> dict[str, Any]:
    """All three measurements; raw numbers."""
    res: dict[str, Any] = {"throughput": {}, "ddp": {}, "memory": {}}
    configs = {
        "shapes classifier, 64 px": ("shapes", "64", "200" if quick else "800", "50"),
        "resnet18, 224 px": ("resnet18", "224", "32" if quick else "128", "16"),
    }
    for title, (model, size, num, batch) in configs.items():
        plain: list[float] = []
        writer: list[float] = []
        base = ["--model", model, "--size", size, "--num", num, "--batch", batch]
        for _ in range(rounds):  # interleaved
            plain.append(_spawn(*base)["images_per_s"])
            writer.append(_spawn(*base, "--writer")["images_per_s"])
        res["throughput"][title] = {"plain": plain, "writer": writer}
    num = "400" if quick else "1600"
    one: list[float] = []
    two: list[float] = []
    for _ in range(rounds):
        base = ["--model", "shapes", "--num", num, "--batch", "50", "--writer"]
        one.append(_spawn(*base)["images_per_s"])
        two.append(_spawn(*base, "--devices", "2", "--strategy", "ddp")["images_per_s"])
    res["ddp"] = {"one": one, "two": two, "images": int(num)}
    n = 200 if quick else 400
    for mult in (1, 10):
        r = _spawn("--model", "shapes", "--num", str(n * mult), "--batch", "50", "--writer")
        res["memory"][str(n * mult)] = r["maxrss_mb"]
    return res


def render(res: dict[str, Any], load: str) -> str:
    """Markdown of :func:`measure`'s numbers."""
    med = statistics.median
    lines = [
        f"Fresh subprocesses, 1 thread each, interleaved rounds, medians ({load}).",
        "",
        "| model | plain predict img/s | with CAMWriter img/s | ratio of medians | "
        "median of per-round ratios [range] (target >= 0.85) |",
        "|---|---:|---:|---:|---:|",
    ]

    def paired(a: list[float], b: list[float]) -> str:
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        return f"{med(ratios):.2f} x [{min(ratios):.2f}-{max(ratios):.2f}]"

    for title, r in res["throughput"].items():
        p, w = med(r["plain"]), med(r["writer"])
        lines.append(
            f"| {title} | {p:,.1f} | {w:,.1f} | {w / p:.2f} x | {paired(r['plain'], r['writer'])} |"
        )
    d = res["ddp"]
    o, t = med(d["one"]), med(d["two"])
    lines += [
        "",
        f"DDP, shapes 64 px, {d['images']} images with CAMWriter: 1 process {o:,.1f} img/s, "
        f"2 processes (gloo) {t:,.1f} img/s: **{t / o:.2f} x** (per round: "
        f"{paired(d['one'], d['two'])}; target >= 1.7 x).",
    ]
    mem = res["memory"]
    (n1, m1), (n10, m10) = sorted(((int(k), v) for k, v in mem.items()))
    lines += [
        "",
        f"Peak resident memory of a CAMWriter run: {m1:,.0f} MB for {n1} images, "
        f"{m10:,.0f} MB for {n10} images ({m10 / m1:.2f} x for 10 x the images).",
    ]
    return "\n".join(lines)


def case_writer(quick: bool = False, rounds: int = 3) -> tuple[str, str, dict[str, Any]]:
    """``(title, markdown, raw)`` for run.py's report."""
    load = f"load average {os.getloadavg()[0]:.1f} at the start"
    res = measure(quick, rounds)
    return "CAMWriter: dataset explanation on trainer.predict", render(res, load), res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("--model", default="shapes")
    w.add_argument("--size", type=int, default=64)
    w.add_argument("--num", type=int, default=200)
    w.add_argument("--batch", type=int, default=50)
    w.add_argument("--writer", action="store_true")
    w.add_argument("--devices", type=int, default=1)
    w.add_argument("--strategy", default="auto")
    w.add_argument("--accelerator", default="cpu")
    w.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.cmd == "worker":
        worker(args)
        return 0
    title, body, raw = case_writer(args.quick, args.rounds)
    print(f"## {title}\n\n{body}")
    print(json.dumps(raw), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
