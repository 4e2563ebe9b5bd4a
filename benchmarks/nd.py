"""3-D Grad-CAM side by side: lightning-cam, MONAI's ``monai.visualize.GradCAM`` and
pytorch-grad-cam's 3-D path, against a no-grad forward, on one MONAI network and volume batch.

Every implementation gets the same model (MONAI ``DenseNet121(spatial_dims=3)``, random
weights, eval mode; a deep copy per library, since MONAI's and pytorch-grad-cam's hooks stay on
the model they are given), the same layer (``class_layers.relu``, MONAI's own example layer,
or ``--layer``), the same seeded volumes and the same class. Cases run in one process in
interleaved rounds (A B C D A B C D ...) after a warm-up round; each reports its median, its
inter-quartile range and its ratio to the no-grad forward, and the peers how many times slower
than lightning-cam they are. A correctness column gives the largest difference between each
peer's map (MONAI's flip undone) and ours. ``--memory`` adds the peak resident memory above
the model-and-input baseline, one subprocess per case.

Run (from the repository root)::

    pip install -e ".[bench]" monai       # grad-cam, psutil; monai
    python benchmarks/nd.py --memory --out benchmarks/nd.md   # batch 2, 64^3 volumes, 5 rounds
    python benchmarks/nd.py --quick        # smoke: 1 volume of 32^3, layer features.denseblock3
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout
    sys.path.insert(0, str(REPO))

import lightning_cam as lc  # noqa: E402  (after the path set-up above)

CASES = ("floor", "ours", "monai", "pgc")
TITLES = {
    "floor": "no-grad forward (the floor)",
    "ours": "lightning-cam `GradCAM`",
    "monai": "MONAI `monai.visualize.GradCAM`",
    "pgc": "pytorch-grad-cam `GradCAM` (3-D)",
}


def build(size: int, batch: int) -> tuple[nn.Module, torch.Tensor]:
    """The benchmark's MONAI DenseNet121 (3-D, one input channel, two classes) and volumes."""
    from monai.networks.nets import DenseNet121

    torch.manual_seed(0)
    model = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).eval()
    x = torch.randn(batch, 1, size, size, size, generator=torch.Generator().manual_seed(1))
    return model, x


def make_case(name: str, model: nn.Module, x: torch.Tensor, layer: str,
              cls: int) -> Callable[[], np.ndarray | None]:
    """A zero-argument call of one implementation (objects built here, outside the timing);
    it returns the normalised maps ``(B, D, H, W)`` (``None`` for the floor)."""
    if name == "floor":
        def floor() -> None:
            with torch.no_grad():
                model(x)
        return floor
    if name == "ours":
        cam = lc.GradCAM(model, layer)
        return lambda: cam(x, target=cls).numpy()
    if name == "monai":
        from monai.visualize import GradCAM as MonaiGradCAM

        mcam = MonaiGradCAM(copy.deepcopy(model), target_layers=layer)
        return lambda: 1.0 - mcam(x, class_idx=cls).detach()[:, 0].numpy()  # its (1, 0) scaling
    if name == "pgc":
        from pytorch_grad_cam import GradCAM as PgcGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        peer = copy.deepcopy(model)
        pcam = PgcGradCAM(model=peer, target_layers=[peer.get_submodule(layer)])
        targets = [ClassifierOutputTarget(cls)] * x.shape[0]
        return lambda: pcam(input_tensor=x, targets=targets)
    raise ValueError(f"unknown case {name!r}; expected one of {CASES}")


def time_cases(calls: dict[str, Callable[[], object]], reps: int,
               warmup: int) -> dict[str, list[float]]:
    """Interleaved rounds: every case once per round, ``warmup`` rounds untimed."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(warmup + reps):
        for k, fn in calls.items():
            t = time.perf_counter()
            fn()
            if r >= warmup:
                times[k].append(time.perf_counter() - t)
    return times


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one_memory(case: str, size: int, batch: int, layer: str, cls: int) -> float:
    """Peak resident memory (MiB) of one call of ``case`` above the model-and-input baseline
    (run in a fresh process: ``ru_maxrss`` never goes down)."""
    model, x = build(size, batch)
    fn = make_case(case, model, x, layer, cls)
    base = _rss_mib()
    fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return max(0.0, peak - base)


def memory(args: argparse.Namespace) -> dict[str, float]:
    """Peak MiB per case, one subprocess each. glibc's malloc there returns every block of
    64 KiB or more to the system when it is freed (a fixed ``MALLOC_MMAP_THRESHOLD_``), so the
    resident set follows the live tensors and its peak is theirs, not the allocator's."""
    out: dict[str, float] = {}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    for case in CASES:
        cmd = [sys.executable, __file__, "--one-memory", case, "--size", str(args.size),
               "--batch", str(args.batch), "--layer", args.layer, "--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        out[case] = float(res.stdout.strip().splitlines()[-1])
    return out


def _versions() -> str:
    names = ("torch", "monai", "grad-cam", "lightning-cam")
    found = []
    for n in names:
        try:
            found.append(f"{n} {importlib.metadata.version(n)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{n} (checkout)")
    return ", ".join(found)


def render(args: argparse.Namespace, times: dict[str, list[float]], diffs: dict[str, float],
           mem: dict[str, float] | None, load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        "# 3-D Grad-CAM: lightning-cam, MONAI, pytorch-grad-cam",
        "",
        f"`python benchmarks/nd.py {' '.join(sys.argv[1:])}` on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.machine()}"
        f", {torch.get_num_threads()} torch thread(s), CPU; {_versions()}.",
        f"MONAI `DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)` (random weights, "
        f"eval), {args.batch} volume(s) of 1 x {args.size}^3, layer `{args.layer}`, class 1; "
        f"{args.reps} interleaved rounds after {args.warmup} warm-up round(s). Load average "
        f"{load[0][0]:.1f} at the start, {load[1][0]:.1f} at the end.",
        "",
        "| case | median s | IQR s | x no-grad forward | x lightning-cam | max diff of maps |"
        + (" peak MiB above baseline |" if mem else ""),
        "|---|---|---|---|---|---|" + ("---|" if mem else ""),
    ]
    for k in times:
        q = np.percentile(times[k], [25, 75])
        vs_ours = "" if k == "floor" else f"{med[k] / med['ours']:.2f}"
        diff = f"{diffs[k]:.1e}" if k in diffs else ""
        row = (f"| {TITLES[k]} | {med[k]:.3f} | {q[1] - q[0]:.3f} | {med[k] / med['floor']:.2f} "
               f"| {vs_ours} | {diff} |")
        lines.append(row + (f" {mem[k]:.0f} |" if mem else ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--layer", default="class_layers.relu")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memory", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--one-memory", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.size, args.batch, args.reps, args.warmup = 32, 1, 1, 0
        args.layer = "features.denseblock3" if args.layer == "class_layers.relu" else args.layer
    if args.one_memory:
        mib = one_memory(args.one_memory, args.size, args.batch, args.layer, 1)
        print(f"{mib:.1f}")
        return ""
    load0 = os.getloadavg()
    model, x = build(args.size, args.batch)
    calls = {k: make_case(k, model, x, args.layer, 1) for k in CASES}
    ours = calls["ours"]()
    diffs = {k: float(np.abs(np.asarray(calls[k]()) - ours).max()) for k in ("monai", "pgc")}
    times = time_cases(calls, args.reps, args.warmup)
    mem = memory(args) if args.memory else None
    report = render(args, times, diffs, mem, (load0, os.getloadavg()))
    if args.out is not None:
        args.out.write_text(report)
    if args.json is not None:
        args.json.write_text(json.dumps({"times": times, "diffs": diffs, "memory": mem}))
    print(report)
    return report


if __name__ == "__main__":
    main()
