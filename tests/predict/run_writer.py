"""A predict run with CAMWriter for the subprocess tests (DDP, kill and resume).

    python tests/predict/run_writer.py OUT --num 10 [--devices 2 --strategy ddp] [--sleep 0.05]
"""

from __future__ import annotations

import argparse
import time

import torch
from pytorch_lightning import Trainer
from torch.utils.data import DataLoader, Dataset

from lightning_cam.data import ShapesDataset
from lightning_cam.models import ShapesClassifier
from lightning_cam.predict import CAMWriter


class SlowShapes(Dataset):
    """Shapes at 32 px; ``sleep`` seconds per sample (to kill a run mid-way)."""

    def __init__(self, num: int, sleep: float) -> None:
        self.data = ShapesDataset(num, image_size=32, seed=3)
        self.sleep = sleep

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.sleep:
            time.sleep(self.sleep)
        return self.data[i]


def run(
    out: str,
    num: int = 10,
    devices: int = 1,
    strategy: str = "auto",
    sleep: float = 0.0,
    shard_size: int = 3,
) -> None:
    """One predict run with the writer (also called in-process by the tests)."""
    torch.manual_seed(0)  # the same weights in every process
    model = ShapesClassifier(num_classes=4)
    writer = CAMWriter(
        out,
        layer="backbone",
        metrics=["pointing_game", "localisation_error", "average_drop"],
        shard_size=shard_size,
        sanity_samples=4,
        sanity_stages=2,
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        callbacks=[writer],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(SlowShapes(num, sleep), batch_size=2)
    trainer.predict(model, loader, return_predictions=False)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--num", type=int, default=10)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--strategy", default="auto")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--shard-size", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    run(args.out, args.num, args.devices, args.strategy, args.sleep, args.shard_size)


if __name__ == "__main__":
    main()
