"""Real processes: 2-process DDP (gloo) against a single process, and a run killed mid-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lightning_cam.predict import load_maps
from tests.predict.run_writer import run as run_in_process

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "predict" / "run_writer.py"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), str(out), *extra]


def _run(out: Path, *extra: str) -> None:
    done = subprocess.run(_cmd(out, *extra), env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "manifest.parquet").sort_values("index").reset_index(drop=True)


def _same_outputs(a: Path, b: Path, n: int) -> None:
    da, db = _manifest(a), _manifest(b)
    assert da["index"].tolist() == list(range(n)) == db["index"].tolist()
    cols = [c for c in da.columns if c not in ("shard", "row", "rank")]
    pd.testing.assert_frame_equal(da[cols], db[cols], check_exact=False, rtol=1e-5, atol=1e-6)
    for ra, rb in zip(da.itertuples(), db.itertuples(), strict=True):
        for key in ("cam/gradcam/backbone", "cam/gradcam++/backbone"):
            np.testing.assert_allclose(load_maps(a, ra.shard, ra.row, key),
                                       load_maps(b, rb.shard, rb.row, key), atol=1e-3)
    sa = (a / "summary.json").read_text()
    assert f'"images": {n}' in sa


def test_two_ddp_processes_equal_one(tmp_path: Path) -> None:
    run_in_process(str(tmp_path / "single"), num=9)
    _run(tmp_path / "ddp", "--num", "9", "--devices", "2", "--strategy", "ddp")
    shards = sorted(p.name for p in (tmp_path / "ddp" / "shards").glob("*.parquet"))
    assert {s[:6] for s in shards} == {"r00000", "r00001"}  # one shard set per rank
    df = _manifest(tmp_path / "ddp")
    assert set(df["rank"]) == {0, 1}
    _same_outputs(tmp_path / "single", tmp_path / "ddp", 9)
    import json

    s1 = json.loads((tmp_path / "single" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    for m in ("gradcam", "gradcam++"):  # means synced across the ranks = one process's
        for k, v in s1["metrics"][m]["backbone"].items():
            got = s2["metrics"][m]["backbone"][k]
            assert got["count"] == v["count"] == 9
            assert abs(got["mean"] - v["mean"]) < 1e-6
        for sim in ("spearman", "ssim"):
            np.testing.assert_allclose(s2["sanity"]["similarity"][m]["backbone"][sim],
                                       s1["sanity"]["similarity"][m]["backbone"][sim],
                                       atol=1e-6)
    assert s2["sanity"]["samples"] == s1["sanity"]["samples"] == 4


def test_a_killed_run_resumes_without_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(out, "--num", "24", "--sleep", "0.15", "--shard-size", "2"),
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if len(list((out / "shards").glob("*.parquet"))) >= 2 if (out / "shards").is_dir() \
                    else False:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed = sorted(p.stem for p in (out / "shards").glob("*.parquet"))
    assert 2 <= len(killed) < 12 and not (out / "manifest.parquet").exists()
    _run(out, "--num", "24", "--shard-size", "2")
    after = sorted(p.stem for p in (out / "shards").glob("*.parquet"))
    assert set(killed) <= set(after)
    assert all(s.startswith("r00000-a002-") for s in set(after) - set(killed))  # a new attempt
    # no orphan maps or temporary files are left
    files = {p.stem for p in (out / "shards").iterdir()}
    assert files == set(after)
    run_in_process(str(tmp_path / "clean"), num=24, shard_size=2)
    _same_outputs(out, tmp_path / "clean", 24)
