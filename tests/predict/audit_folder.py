"""A small finished CAMWriter folder for the report and FiftyOne tests: 6 shapes images of
32 px (ids ``img000`` ...), masks and boxes (the localisation metrics have values), average
drop, a 2-stage sanity check, and the images written as PNG files in a folder."""

from __future__ import annotations

from pathlib import Path

from lightning_cam.data import ShapesDataset
from lightning_cam.predict import CAMWriter
from lightning_cam.tools import viz
from tests.predict.conftest import loader, tiny_model, trainer

NUM = 6
METRICS = ["pointing_game", "average_drop"]


def make_audit(root: Path) -> tuple[Path, Path]:
    """``(out, images)``: the CAMWriter folder and the folder of its images (``images/<id>``,
    PNG files named by id)."""
    out, images = root / "audit", root / "images"
    images.mkdir(parents=True, exist_ok=True)
    data = ShapesDataset(NUM, image_size=32, seed=5)  # TinyShapes' images
    for i in range(NUM):
        viz.save_image(images / f"img{i:03d}.png", viz.to_uint8_image(data[i]["image"]))
    writer = CAMWriter(
        out, layer="backbone", metrics=METRICS, sanity_samples=2, sanity_stages=2, shard_size=4
    )
    trainer([writer]).predict(tiny_model(), loader(NUM, with_id=True), return_predictions=False)
    for i in range(NUM):  # the ids have no extension: the files are named by id
        (images / f"img{i:03d}.png").rename(images / f"img{i:03d}")
    return out, images
