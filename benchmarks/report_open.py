"""How fast the HTML report of a large CAMWriter folder is made and opens.

A synthetic finished folder of ``--num`` images (10,000 by default: 32 px PNG images, two
methods at one 7 x 7 layer, five metrics, a sanity check) is written with the writer's own
storage functions; then ``write_report`` runs twice (the second reuses every picture), and the
page is opened in headless Chromium (``tests/browser.py``'s flags): the time from navigation to
the page's ready mark, the page's own script time, and one sort and one filter of the whole
table. Writes the table to ``benchmarks/report.md`` (``--out``) and prints it.

    python benchmarks/report_open.py [--num 10000] [--out benchmarks/report.md]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["pointing_game", "energy_pointing_game", "localisation_error", "average_drop",
           "increase_in_confidence"]  # fmt: skip
METHODS, LAYERS = ["gradcam", "gradcam++"], ["layer4"]


def synthetic_folder(out: Path, num: int, seed: int = 0) -> Path:
    """A finished CAMWriter folder of ``num`` images and their image files (``out/images``)."""
    from lightning_cam.predict import storage
    from lightning_cam.predict.summary import write_summary
    from lightning_cam.tools import viz

    rng = np.random.default_rng(seed)
    folder, images = out / "audit", out / "images"
    storage.prepare_folder(folder, 0)
    images.mkdir(parents=True, exist_ok=True)
    config = {"methods": METHODS, "layer": None, "target": "predicted", "metrics": METRICS}
    run = {"fingerprint": "synthetic", "config": config, "format": 1}
    storage.write_run_file(folder, run)
    shards = storage.ShardWriter(folder, 0, "synthetic", shard_size=1024)
    columns: dict[str, list[float]] = {}
    for i in range(num):
        image_id = f"class{i % 10}/img{i:05d}.png"
        (images / image_id).parent.mkdir(exist_ok=True)
        viz.save_image(images / image_id, rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        label = i % 10
        row = {"index": i, "id": image_id, "status": "ok", "nonfinite": False,
               "input_hash": "", "input_shape": "3x32x32", "label": label,
               "explained_class": label, "score": float(rng.normal()),
               "predicted_class": label if rng.random() < 0.8 else int(rng.integers(10)),
               "predicted_prob": float(rng.random())}  # fmt: skip
        maps = {}
        for m in METHODS:
            for n in LAYERS:
                maps[f"cam/{m}/{n}"] = rng.random((7, 7)).astype(np.float16)
                for k in METRICS:
                    v = float(rng.random() < 0.5) if "pointing" in k else float(rng.random())
                    row[f"{m}/{n}/{k}"] = v
                    columns.setdefault(f"{m}/{n}/{k}", []).append(v)
        shards.add(row, maps)
    shards.flush()
    rows = storage.write_manifest(folder, "synthetic")
    quality = {k: (float(np.mean(v)), len(v)) for k, v in columns.items()}
    stages = ["layer4", "layer3", "layer1", "conv1"]
    sanity = {
        f"{m}/{n}/{s}/{sim}": (math.exp(-s) * (0.9 if sim == "ssim" else 1.0), 16)
        for m in METHODS for n in LAYERS for s in range(len(stages)) for sim in ("spearman", "ssim")
    }  # fmt: skip
    write_summary(folder, rows, METHODS, LAYERS, METRICS, quality, sanity, stages, config)
    return folder


def open_page(index: Path) -> dict[str, float]:
    """Open the page in headless Chromium; the times in milliseconds."""
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from tests.browser import ARGS, chromium_path

    profile = tempfile.mkdtemp(prefix="lc-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium_path(), headless=True, args=ARGS,
                viewport={"width": 1280, "height": 900},
            )  # fmt: skip
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            start = time.perf_counter()
            page.goto(index.resolve().as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            wall = (time.perf_counter() - start) * 1e3
            script = page.evaluate("window.LC_READY_MS")
            sort = page.evaluate("""() => { const t = performance.now();
                document.querySelector("th[data-col='m:average_drop']").click();
                return performance.now() - t; }""")
            search = page.evaluate("""() => { const t = performance.now();
                const box = document.getElementById('lc-search'); box.value = 'class3/';
                box.dispatchEvent(new Event('input')); return performance.now() - t; }""")
            shown = page.locator("#lc-table tbody tr").count()
            context.close()
            if errors:
                raise RuntimeError(f"page errors: {errors}")
            return {"wall": wall, "script": script, "sort": sort, "search": search, "rows": shown}
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "report.md"))
    args = parser.parse_args(argv)
    from lightning_cam.predict.report import write_report
    from lightning_cam.predict.thumbnails import Thumbnails

    work = Path(tempfile.mkdtemp(prefix="lc-report-bench-"))
    try:
        t = time.perf_counter()
        folder = synthetic_folder(work, args.num)
        made = time.perf_counter() - t
        times = []
        for _ in range(2):
            t = time.perf_counter()
            index = write_report(folder, images=work / "images")
            times.append(time.perf_counter() - t)
        from lightning_cam.predict.audit import open_audit

        check = Thumbnails(open_audit(folder, work / "images"), folder / "report")
        check.run()
        data_mb = (folder / "report" / "data.js").stat().st_size / 2**20
        opened = [open_page(index) for _ in range(3)]
        best = {k: min(o[k] for o in opened) for k in opened[0]}
        lines = [
            "# The HTML report: time to make and to open",
            "",
            f"`python benchmarks/report_open.py --num {args.num}`: a synthetic CAMWriter folder "
            f"of {args.num:,} images (32 px, 2 methods x 1 layer of 7 x 7, 5 metrics); "
            "headless Chromium (best of 3 opens). Made on a shared 2-core machine.",
            "",
            "| step | value |",
            "|---|---|",
            f"| synthetic folder written (not the report) | {made:.1f} s |",
            f"| `write_report`, first run ({args.num * 3:,} pictures) | {times[0]:.1f} s |",
            f"| `write_report`, rerun ({check.reused:,} pictures reused) | {times[1]:.1f} s |",
            f"| `data.js` | {data_mb:.2f} MiB |",
            f"| open: navigation to ready | {best['wall']:.0f} ms |",
            f"| open: page script done (performance.now) | {best['script']:.0f} ms |",
            f"| sort {args.num:,} rows by a metric | {best['sort']:.1f} ms |",
            f"| filter {args.num:,} rows by id | {best['search']:.1f} ms |",
            f"| table rows in the page (one page) | {best['rows']:.0f} |",
            "",
        ]
        text = "\n".join(lines)
        print(text)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(json.dumps({"opens": opened}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
