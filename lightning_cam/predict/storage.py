"""Where a dataset explanation lives on disk: the run file, per-rank shards, the manifest.

Layout of an output folder::

    run.json                          the configuration of the run (refuses to mix another one)
    shards/r00000-a001-s000000.npz    maps of up to ``shard_size`` images of rank 0, attempt 1
    shards/r00000-a001-s000000.parquet  the shard's index: one row per image (manifest columns)
    manifest.parquet                  every image: the union of the shard indexes (rank zero)
    summary.json, summary.md          dataset-level metrics and the sanity check
    overlays/                         optional pictures

A shard is complete when its index exists: the maps file is written first, then the index,
each to a temporary name and renamed (``os.replace``, atomic on POSIX file systems). A run that
is killed leaves at most a maps file without index (ignored, then replaced or removed) and
temporary files (removed); a rerun skips the images listed in complete indexes.

Maps in a shard (``.npz``, read with ``numpy.load``): one array per key ``"cam/{method}/{layer}"``
of shape ``(N, h, w)`` (``N`` images in shard order; ``(N, l)`` for signals, ``(N, d, h, w)``
for volumes and videos: maps keep the input's spatial rank), ``"guided_backprop"``
``(N, 3, H, W)`` and ``"guided_gradcam/{method}/{layer}"`` ``(N, 3, H, W)`` when asked for, and
``"index"`` ``(N,)``.
CAMs are float16 in ``[0, 1]`` (or uint8, ``round(255 * map)``) at the layer's resolution (or the
input's); guided outputs are float16.

Example:
    >>> import tempfile, numpy as np
    >>> out = prepare_folder(tempfile.mkdtemp(), rank=0)
    >>> shards = ShardWriter(out, rank=0, fingerprint="abc", shard_size=2)
    >>> shards.add({"index": 0, "id": "0"}, {"cam/gradcam/layer4": np.zeros((7, 7), np.float16)})
    >>> shards.flush()
    >>> [name for name, _ in complete_shards(out)]
    ['r00000-a001-s000000']
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

RUN_FILE = "run.json"
SHARDS_DIR = "shards"
MANIFEST_FILE = "manifest.parquet"
FINGERPRINT_KEY = b"lightning_cam.fingerprint"
_SHARD_RE = re.compile(r"^r(\d{5})-a(\d{3})-s(\d{6})$")


class OutputFolderError(RuntimeError):
    """The output folder cannot be used: unwritable, full, or holding another run's results."""


def require_pyarrow() -> Any:
    """Import pyarrow (the manifest's format) or say how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError(
            "CAMWriter writes Parquet manifests with pyarrow: pip install pyarrow "
            "(or pip install 'lightning-cam[integrations]')"
        ) from err
    return pyarrow


def _no_space(err: OSError, path: Path) -> OutputFolderError:
    return OutputFolderError(
        f"No space left on the device writing {str(path)!r}: free some space or choose another "
        "output_dir; a rerun with the same arguments resumes where this one stopped."
    )


def write_bytes_atomic(path: Path, write: Any) -> None:
    """Write ``path`` through ``write(file)`` to a temporary name, fsync, then rename.

    Raises:
        OutputFolderError: No space left (``ENOSPC``) or no permission.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _no_space(err, path) from err
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise OutputFolderError(
                f"Cannot write {str(path)!r} ({err.strerror}): choose a writable output_dir."
            ) from err
        raise


def prepare_folder(output_dir: str | os.PathLike[str], rank: int) -> Path:
    """Create ``output_dir/shards`` and check that this rank can write there.

    Raises:
        OutputFolderError: The folder cannot be created or written (named, with the reason).
    """
    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputFolderError(
            f"output_dir={str(out)!r} is a file, not a folder: choose a folder path."
        )
    try:
        (out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputFolderError(
            f"Cannot create output_dir={str(out)!r} ({err.strerror or err}): choose a writable "
            "folder."
        ) from err
    probe = out / SHARDS_DIR / f".probe-r{rank:05d}"
    write_bytes_atomic(probe, lambda f: f.write(b"ok"))
    probe.unlink()
    return out


def check_free_space(output_dir: Path, needed_bytes: int) -> None:
    """Refuse up front when the folder's device has less free space than ``needed_bytes``.

    Raises:
        OutputFolderError: With the estimate and what is free.
    """
    free = shutil.disk_usage(output_dir).free
    if needed_bytes > free:
        raise OutputFolderError(
            f"Not enough space in {str(output_dir)!r}: the remaining maps need about "
            f"{needed_bytes / 2**20:,.1f} MiB but {free / 2**20:,.1f} MiB are free. Free some "
            "space, choose another output_dir, or store less (map_size='layer', "
            "map_dtype='uint8', no guided outputs)."
        )


def check_run_file(output_dir: Path, config: Mapping[str, Any]) -> bool:
    """Compare ``config`` with the folder's ``run.json``; ``True`` when it must be written.

    Raises:
        OutputFolderError: The folder holds results of another configuration (the differing
            keys are named), or shards without a run file.
    """
    run = output_dir / RUN_FILE
    if run.exists():
        try:
            old = json.loads(run.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise OutputFolderError(
                f"Cannot read {str(run)!r} ({err}); it is not a lightning-cam run file. Choose "
                "another output_dir."
            ) from err
        if old.get("fingerprint") != config["fingerprint"]:
            before, now = old.get("config", {}), config.get("config", {})
            diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            shown = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in diff[:6])
            raise OutputFolderError(
                f"output_dir={str(output_dir)!r} holds the results of another configuration "
                f"({shown or 'different model weights'}). Refusing to mix them: choose another "
                "output_dir, or delete this one to start over."
            )
        return False
    if any(p.suffix in (".npz", ".parquet") for p in (output_dir / SHARDS_DIR).iterdir()):
        raise OutputFolderError(
            f"output_dir={str(output_dir)!r} has shards but no {RUN_FILE}: they come from an "
            "unknown run. Refusing to mix them: choose another output_dir or delete it."
        )
    return True


def write_run_file(output_dir: Path, config: Mapping[str, Any]) -> None:
    """Write ``run.json`` (atomically)."""
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(output_dir / RUN_FILE, lambda f: f.write(text.encode()))


def shard_name(rank: int, attempt: int, seq: int) -> str:
    """``r{rank:05d}-a{attempt:03d}-s{seq:06d}``."""
    return f"r{rank:05d}-a{attempt:03d}-s{seq:06d}"


def parse_shard_name(name: str) -> tuple[int, int, int] | None:
    """``(rank, attempt, seq)`` of a shard name, or ``None``."""
    m = _SHARD_RE.match(name)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def complete_shards(output_dir: str | os.PathLike[str]) -> Iterator[tuple[str, Path]]:
    """``(name, index path)`` of every complete shard, sorted by name."""
    folder = Path(output_dir) / SHARDS_DIR
    if not folder.is_dir():
        return
    for p in sorted(folder.glob("*.parquet")):
        if parse_shard_name(p.stem) is not None and p.with_suffix(".npz").exists():
            yield p.stem, p


def read_index(path: Path, fingerprint: str | None = None) -> Any:
    """A shard index as a ``pyarrow.Table``, checked against ``fingerprint``.

    Raises:
        OutputFolderError: The shard comes from another configuration.
    """
    pq = require_pyarrow().parquet
    table = pq.read_table(path)
    got = (table.schema.metadata or {}).get(FINGERPRINT_KEY, b"").decode()
    if fingerprint is not None and got != fingerprint:
        raise OutputFolderError(
            f"Shard {str(path)!r} comes from another configuration (fingerprint {got[:12]!r}, "
            f"this run {fingerprint[:12]!r}). Refusing to mix them: choose another output_dir."
        )
    return table


def remove_stale(output_dir: Path, rank: int | None = None) -> int:
    """Remove temporary files and maps files without an index (of ``rank``, or of all ranks).

    Returns:
        The number of files removed.
    """
    removed = 0
    folder = output_dir / SHARDS_DIR
    for p in folder.iterdir():
        parsed = parse_shard_name(p.stem)
        stale_tmp = p.name.startswith(".") and ".tmp" in p.name
        orphan = (
            p.suffix == ".npz" and parsed is not None and not p.with_suffix(".parquet").exists()
        )
        if rank is not None:
            mine = (parsed is not None and parsed[0] == rank) or p.name.startswith(
                (f".r{rank:05d}-", f".probe-r{rank:05d}")
            )
            if not mine:
                continue
        if stale_tmp or orphan:
            try:
                p.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def next_attempt(output_dir: Path, rank: int) -> int:
    """1 + the highest attempt number among this rank's shard files (1 for a fresh folder)."""
    attempts = [
        parsed[1]
        for p in (output_dir / SHARDS_DIR).iterdir()
        if (parsed := parse_shard_name(p.stem)) is not None and parsed[0] == rank
    ]
    return max(attempts, default=0) + 1


def model_digest(model: Any) -> str:
    """A hash of a module's parameters and buffers (another checkpoint, another digest)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        h.update(name.encode())
        if hasattr(t, "detach"):
            data = t.detach().cpu().contiguous()
            h.update(str(data.dtype).encode())
            h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()


class ShardWriter:
    """Buffers the rows and maps of one rank and writes them as shards of ``shard_size`` images.

    Memory is bounded by ``shard_size`` images: a shard is written as soon as it is full.

    Args:
        output_dir: The output folder (prepared with :func:`prepare_folder`).
        rank: The global rank (part of every file name: no two ranks write the same file).
        fingerprint: The configuration's fingerprint, stored in every index.
        shard_size: Images per shard.
        attempt: The attempt number in file names (default: :func:`next_attempt`).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        rank: int,
        fingerprint: str,
        shard_size: int = 1024,
        attempt: int | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.rank = int(rank)
        self.fingerprint = fingerprint
        self.shard_size = int(shard_size)
        self.attempt = attempt if attempt is not None else next_attempt(self.output_dir, rank)
        self.seq = 0
        self.bytes_written = 0
        self._rows: list[dict[str, Any]] = []
        self._maps: dict[str, list[np.ndarray]] = {}

    def add(self, row: dict[str, Any], maps: Mapping[str, np.ndarray]) -> None:
        """Add one image: its manifest row and its maps (arrays of one image)."""
        if self._rows and set(maps) != set(self._maps):
            raise ValueError(
                f"every image of a shard needs the same maps, got {sorted(maps)} after "
                f"{sorted(self._maps)}"
            )
        for key, arr in maps.items():
            self._maps.setdefault(key, []).append(arr)
        self._rows.append(row)
        if len(self._rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered images as one shard (nothing when the buffer is empty)."""
        if not self._rows:
            return
        pa = require_pyarrow()
        pq = pa.parquet
        name = shard_name(self.rank, self.attempt, self.seq)
        folder = self.output_dir / SHARDS_DIR
        arrays = {k: np.stack(v) for k, v in self._maps.items()}
        arrays["index"] = np.asarray([r.get("index", -1) for r in self._rows], np.int64)
        rows = [
            {**r, "rank": self.rank, "shard": f"{SHARDS_DIR}/{name}.npz", "row": i}
            for i, r in enumerate(self._rows)
        ]
        table = pa.Table.from_pylist(rows)
        table = table.replace_schema_metadata({FINGERPRINT_KEY: self.fingerprint.encode()})
        write_bytes_atomic(folder / f"{name}.npz", lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
        write_bytes_atomic(folder / f"{name}.parquet", lambda f: pq.write_table(table, f))
        self.bytes_written += sum(a.nbytes for a in arrays.values())
        self.seq += 1
        self._rows, self._maps = [], {}

    def __len__(self) -> int:
        return len(self._rows)


def write_manifest(output_dir: Path, fingerprint: str, unique_index: bool = True) -> int:
    """Join every complete shard index into ``manifest.parquet`` (streamed: one shard in memory
    at a time), sorted by shard name; returns the number of rows.

    ``unique_index``: one row per image, so a dataset index listed twice is an error (``False``
    for detection runs: one row per detection, an image's index on each of its rows).

    Raises:
        OutputFolderError: A shard of another configuration, or an image in two shards.
    """
    pa = require_pyarrow()
    pq = pa.parquet
    path = output_dir / MANIFEST_FILE
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    writer = None
    total = 0
    seen: list[np.ndarray] = []
    # One schema for all: a column that is all null in one shard (the classes of a shard of
    # non-finite images) takes its type from the others.
    paths = [p for _name, p in complete_shards(output_dir)]
    schema = pa.unify_schemas([pq.read_schema(p) for p in paths]) if paths else None
    try:
        for index_path in paths:
            table = read_index(index_path, fingerprint)
            seen.append(table.column("index").to_numpy())
            assert schema is not None
            if writer is None:
                writer = pq.ParquetWriter(tmp, schema)
            if table.schema != schema:
                table = pa.table(
                    {
                        f.name: (
                            table.column(f.name).cast(f.type)
                            if f.name in table.column_names
                            else pa.nulls(table.num_rows, f.type)
                        )
                        for f in schema
                    },
                    schema=schema,
                )
            writer.write_table(table)
            total += table.num_rows
        if writer is None:
            writer = pq.ParquetWriter(tmp, pa.schema([("index", pa.int64())]))
        writer.close()
        writer = None
        indices = np.concatenate(seen) if seen else np.zeros(0, np.int64)
        known = indices[indices >= 0]
        if unique_index and np.unique(known).size != known.size:
            raise OutputFolderError(
                f"{str(output_dir)!r} lists some images in two shards (a dataset that changed "
                "between runs?); delete the folder and rerun."
            )
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _no_space(err, path) from err
        raise
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return total


def load_maps(
    output_dir: str | os.PathLike[str], shard: str, row: int, key: str, raw: bool = True
) -> np.ndarray:
    """The map ``key`` (e.g. ``"cam/gradcam/layer4"``) of one image, as float32.

    ``shard`` and ``row`` come from the manifest; uint8 maps are scaled back to ``[0, 1]``.
    A folder written with ``CAMWriter(normalize=False)`` stores each map's scale
    (``cam_scale/...``): the raw map ``min + map * (max - min)`` is returned, or the [0, 1]
    map with ``raw=False``.

    Example:
        ``load_maps(out, row.shard, row.row, "cam/gradcam/backbone")`` for a manifest row.
    """
    scale_key = "cam_scale/" + key[len("cam/"):] if key.startswith("cam/") else None
    with np.load(Path(output_dir) / shard) as data:
        arr = data[key][row]
        scale = data[scale_key][row] if raw and scale_key in data.files else None
    out = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if scale is not None:
        lo, hi = float(scale[0]), float(scale[1])
        out = lo + out * (hi - lo)
    return out
