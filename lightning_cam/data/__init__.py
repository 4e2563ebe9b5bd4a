"""The embedded default data: synthetic shapes with ground-truth boxes and masks.

Example:
    >>> from lightning_cam.data import ShapesDataModule
    >>> ShapesDataModule(num_train=64).class_names
    ['circle', 'square', 'triangle', 'star']
"""

from lightning_cam.data.shapes import CLASSES, ShapesDataModule, ShapesDataset

__all__ = ["CLASSES", "ShapesDataModule", "ShapesDataset"]
