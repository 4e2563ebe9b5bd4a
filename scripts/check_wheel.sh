#!/usr/bin/env bash
# CI: what a pip user gets. Build the wheel, install it in a fresh virtualenv outside the
# checkout, and from an empty temporary folder run the main job (1 epoch, tiny) and
# `lightning-cam explain` on its checkpoint.
#
# Usage: scripts/check_wheel.sh [VENV_DIR]       (default: .venv, the test virtualenv)
#
# Cheap by design: the fresh venv gets only the wheel (`pip install --no-deps`); its
# dependencies (torch ...) come from the test venv's site-packages, appended to the fresh venv's
# path by a .pth file (its own site-packages, holding the wheel, comes first; the test venv's
# .pth files, e.g. the editable install of this checkout, are not run). The script checks that
# `lightning_cam` and its configs import from the wheel's install, never from the checkout, and
# that the installed metadata's version is `lightning_cam.__version__`.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$(cd "${1:-$ROOT/.venv}" && pwd)"
PY="$VENV/bin/python"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lightning-cam-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
unset PYTHONPATH

echo "check_wheel: building the wheel"
# from a copy of the files git would commit: no stale build/ folder or untracked file leaks in
mkdir "$WORK/src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar -c --null -T -) \
    | tar -x -C "$WORK/src"
"$PY" -m pip wheel --disable-pip-version-check -q --no-deps --no-build-isolation \
    -w "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/lightning_cam-*.whl)"

"$PY" -m venv --without-pip "$WORK/venv"
FRESH="$WORK/venv/bin/python"
SITE="$("$FRESH" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
DEPS="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$DEPS" > "$SITE/zz-lightning-cam-test-deps.pth"
"$PY" -m pip --python "$FRESH" install --disable-pip-version-check -q --no-deps --no-index \
    "$WHEEL"

mkdir "$WORK/run"
cd "$WORK/run"
"$FRESH" - "$SITE" <<'PY'
import importlib.metadata, sys
from pathlib import Path

import lightning_cam
from lightning_cam.configs import CONFIG_DIR, config_names

site = Path(sys.argv[1]).resolve()
where = Path(lightning_cam.__file__).resolve()
assert site in where.parents, f"lightning_cam imported from {where}, not the wheel in {site}"
assert CONFIG_DIR.resolve().parent == where.parent, CONFIG_DIR
assert {"shapes", "shapes_explain"} <= set(config_names()), config_names()
installed = importlib.metadata.version("lightning-cam")
assert installed == lightning_cam.__version__, (installed, lightning_cam.__version__)
print(f"check_wheel: lightning-cam {installed} from {where.parent}")
PY

BIN="$WORK/venv/bin/lightning-cam"
echo "check_wheel: lightning-cam demo (1 epoch, tiny) in $WORK/run"
"$BIN" demo --trainer.max_epochs 1 --trainer.limit_train_batches 2 \
    --trainer.limit_val_batches 1 --trainer.num_sanity_val_steps 0 \
    --trainer.enable_progress_bar false --data.num_train 64 --data.num_val 32 \
    --data.batch_size 32 > demo.log 2>&1 || { cat demo.log; exit 1; }
EVENTS="$(ls lightning_logs/shapes/version_0/events.out.tfevents.* | head -1)"
CKPT="$(ls lightning_logs/shapes/version_0/checkpoints/*.ckpt | head -1)"
echo "check_wheel: lightning-cam explain --weight-path $(basename "$CKPT")"
"$BIN" explain --weight-path "$CKPT" --output-dir explained --quiet
"$FRESH" - "$EVENTS" <<'PY'
import json, sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

events = EventAccumulator(sys.argv[1], size_guidance={"images": 0}).Reload()
tags = set(events.Tags()["images"])
assert {"gradcam/backbone/overlay", "gradcam++/backbone/overlay"} <= tags, tags
summary = json.loads(Path("explained/summary.json").read_text())
files = [Path(f) for f in Path("explained").glob("*.jpg")]
assert summary and len(files) >= 6, (summary, files)
print(f"check_wheel: ok ({len(tags)} image tags in TensorBoard, {len(files)} pictures)")
PY
echo "check_wheel: lightning-cam explain --data, then lightning-cam report"
"$FRESH" - <<'PY'
from pathlib import Path

import cv2
import numpy as np

from lightning_cam.data import ShapesDataset

folder = Path("audit_images")
folder.mkdir()
shapes = ShapesDataset(num_samples=4, seed=1)
for i in range(4):
    image = shapes[i]["image"]
    rgb = (image.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(folder / f"im{i}.png"), rgb[:, :, ::-1])
PY
"$BIN" explain --data audit_images --weight-path "$CKPT" --output-dir audit --quiet
"$BIN" report audit --quiet
test -s audit/report/index.html && test -s audit/manifest.parquet
echo "check_wheel: ok (audit folder and its report)"
