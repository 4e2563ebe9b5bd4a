"""The summary of a dataset explanation: ``summary.json`` and ``summary.md``.

Example:
    >>> text = markdown_table(["gradcam"], ["layer4"], ["pointing_game"],
    ...                       {"gradcam/layer4/pointing_game": (0.5, 4)})
    >>> print(text.splitlines()[0])
    | method | layer | pointing game ↑ |
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_cam.metrics import HIGHER_IS_BETTER, SCORES, score_note
from lightning_cam.predict import storage
from lightning_cam.predict.sanity import SIMILARITIES

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


def _fmt(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:.3f}"


def _heading(metric: str) -> str:
    arrow = "↑" if HIGHER_IS_BETTER.get(metric, True) else "↓"
    return f"{metric.replace('_', ' ')} {arrow}"


def markdown_table(
    methods: Sequence[str],
    layers: Sequence[str],
    metrics: Sequence[str],
    quality: dict[str, tuple[float, int]],
) -> str:
    """One row per method and layer, one column per metric (dataset means)."""
    lines = [
        "| method | layer | " + " | ".join(_heading(m) for m in metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for m in methods:
        for n in layers:
            cells = [_fmt(quality.get(f"{m}/{n}/{k}", (math.nan, 0))[0]) for k in metrics]
            lines.append(f"| {m} | `{n}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sanity_table(
    methods: Sequence[str],
    layers: Sequence[str],
    stages: Sequence[str],
    sanity: dict[str, tuple[float, int]],
) -> str:
    """One row per method and layer, one column per cascade stage: ``spearman / ssim``."""
    lines = [
        "| method | layer | " + " | ".join(f"→ `{s}`" for s in stages) + " |",
        "|---|---|" + "---|" * len(stages),
    ]
    for m in methods:
        for n in layers:
            cells = []
            for s in range(len(stages)):
                r = sanity.get(f"{m}/{n}/{s}/spearman", (math.nan, 0))[0]
                q = sanity.get(f"{m}/{n}/{s}/ssim", (math.nan, 0))[0]
                cells.append(f"{_fmt(r)} / {_fmt(q)}")
            lines.append(f"| {m} | `{n}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _statuses(output_dir: Path) -> dict[str, int]:
    """``{status: count}`` of the manifest's images when some were not explained (unreadable
    or non-finite), else ``{}``."""
    path = output_dir / storage.MANIFEST_FILE
    if not path.exists():
        return {}
    pq = storage.require_pyarrow().parquet
    names = set(pq.read_schema(path).names)
    cols = [c for c in ("status", "nonfinite") if c in names]
    if not cols:
        return {}
    table = pq.read_table(path, columns=cols).to_pydict()
    n = len(table[cols[0]])
    status = [str(s) if s is not None else "ok" for s in table.get("status", ["ok"] * n)]
    nonfinite = [bool(v) for v in table.get("nonfinite", [False] * n)]
    counts: dict[str, int] = {}
    for s, bad in zip(status, nonfinite, strict=True):
        key = "nonfinite" if bad and s == "ok" else s
        counts[key] = counts.get(key, 0) + 1
    return counts if set(counts) != {"ok"} else {}


def write_summary(
    output_dir: Path,
    rows: int,
    methods: Sequence[str],
    layers: Sequence[str],
    metrics: Sequence[str],
    quality: dict[str, tuple[float, int]],
    sanity: dict[str, tuple[float, int]],
    sanity_stages: Sequence[str],
    config: dict[str, Any],
    sanity_error: str | None = None,
) -> dict[str, Any]:
    """Write ``summary.json`` and ``summary.md``; return the JSON content (``sanity_error``:
    why the sanity check failed, recorded instead of its table)."""
    summary: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "images": rows,
        "methods": list(methods),
        "layers": list(layers),
        "metrics": _quality_json(methods, layers, metrics, quality),
        "metric_scores": {k: SCORES.get(k, "none") for k in metrics},
        "config": config,
    }
    md = [
        "# Dataset explanation summary",
        "",
        f"{rows} images; means over the images (localisation metrics over those with a mask "
        "or box).",
        "",
        markdown_table(methods, layers, metrics, quality) if metrics else "(no metrics)",
    ]
    if score_note(metrics):
        md += ["", score_note(metrics)]
    md += _status_part(output_dir, summary)
    md += _sanity_part(methods, layers, sanity, sanity_stages, sanity_error, summary)
    text = json.dumps(_clean(summary), indent=2, default=str) + "\n"
    storage.write_bytes_atomic(output_dir / SUMMARY_JSON, lambda f: f.write(text.encode()))
    markdown = "\n".join(md) + "\n"
    storage.write_bytes_atomic(output_dir / SUMMARY_MD, lambda f: f.write(markdown.encode()))
    return summary


def _quality_json(
    methods: Sequence[str],
    layers: Sequence[str],
    metrics: Sequence[str],
    quality: dict[str, tuple[float, int]],
) -> dict[str, Any]:
    """``{method: {layer: {metric: {"mean", "count"}}}}``."""
    per: dict[str, Any] = {}
    for m in methods:
        for n in layers:
            cells = {}
            for k in metrics:
                mean, count = quality.get(f"{m}/{n}/{k}", (math.nan, 0))
                cells[k] = {"mean": mean, "count": count}
            per.setdefault(m, {})[n] = cells
    return per


def _status_part(output_dir: Path, summary: dict[str, Any]) -> list[str]:
    """The images not explained: ``summary["status"]`` and the Markdown lines."""
    statuses = _statuses(output_dir)
    if not statuses:
        return []
    summary["status"] = statuses
    return [
        "",
        "Images not explained: "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()) if s != "ok")
        + " (see the manifest's `status` and `nonfinite` columns).",
    ]


def _sanity_part(
    methods: Sequence[str],
    layers: Sequence[str],
    sanity: dict[str, tuple[float, int]],
    sanity_stages: Sequence[str],
    sanity_error: str | None,
    summary: dict[str, Any],
) -> list[str]:
    """The sanity check (or why it failed): ``summary["sanity"]`` and the Markdown lines."""
    if sanity_error is not None:
        summary["sanity"] = {"error": sanity_error}
        return ["", "## Sanity check: cascading randomisation", "", f"Failed: {sanity_error}"]
    if not sanity:
        return []
    count = max((c for _v, c in sanity.values()), default=0)
    summary["sanity"] = {
        "test": "cascading model-parameter randomisation (Adebayo et al., NeurIPS 2018)",
        "samples": count,
        "stages": list(sanity_stages),
        "similarity": {
            m: {
                n: {
                    sim: [
                        sanity.get(f"{m}/{n}/{s}/{sim}", (math.nan, 0))[0]
                        for s in range(len(sanity_stages))
                    ]
                    for sim in SIMILARITIES
                }
                for n in layers
            }
            for m in methods
        },
    }
    return [
        "",
        "## Sanity check: cascading randomisation",
        "",
        f"Spearman rank correlation / SSIM between the maps of the trained model and of the "
        f"model randomised from the top down to the named layer ({count} images). Low is "
        "good: the maps depend on the weights.",
        "",
        sanity_table(methods, layers, sanity_stages, sanity),
    ]
