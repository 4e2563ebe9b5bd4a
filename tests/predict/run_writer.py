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
    torch.manual_seed(0)  # the same weights in every process
    model = ShapesClassifier(num_classes=4)
    writer = CAMWriter(
        args.out,
        layer="backbone",
        metrics=["pointing_game", "localisation_error", "average_drop"],
        shard_size=args.shard_size,
        sanity_samples=4,
        sanity_stages=2,
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy=args.strategy,
        callbacks=[writer],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(SlowShapes(args.num, args.sleep), batch_size=2)
    trainer.predict(model, loader, return_predictions=False)


if __name__ == "__main__":
    main()
