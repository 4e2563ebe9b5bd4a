"""The embedded default data: synthetic shapes with ground-truth boxes and masks, and their
3-D (volumes) and 1-D (signals) counterparts with ground-truth masks.

Example:
    >>> from lightning_cam.data import ShapesDataModule
    >>> ShapesDataModule(num_train=64).class_names
    ['circle', 'square', 'triangle', 'star']
"""

from lightning_cam.data.shapes import CLASSES, ShapesDataModule, ShapesDataset
from lightning_cam.data.shapes3d import CLASSES_3D, Shapes3DDataModule, Shapes3DDataset
from lightning_cam.data.signals import CLASSES_1D, SignalsDataModule, SignalsDataset

__all__ = [
    "CLASSES",
    "CLASSES_1D",
    "CLASSES_3D",
    "Shapes3DDataModule",
    "Shapes3DDataset",
    "ShapesDataModule",
    "ShapesDataset",
    "SignalsDataModule",
    "SignalsDataset",
]
