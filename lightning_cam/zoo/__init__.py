"""The zoo: classifiers by name and their weights.

``meta`` (the :class:`ClassifierMeta` record, shared errors and constants), ``weights`` (reading
and checking weight files, one loader for every zoo), ``classifiers`` (torchvision networks and
lightning-cam checkpoints), ``hubs`` (``timm:<name>`` and ``hf:<folder>``). Detectors live in
:mod:`lightning_cam.detection.zoo`.
"""

from lightning_cam.zoo import hubs, weights
from lightning_cam.zoo.classifiers import (
    ALIASES,
    SEED_NETWORKS,
    build_classifier,
    checkpoint_backbone,
    default_input_size,
    load_pretrained,
    network_names,
    resolve_network,
    torchvision_classifiers,
)
from lightning_cam.zoo.meta import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassifierMeta,
    UnknownNetworkError,
    resolve_device,
)
from lightning_cam.zoo.weights import (
    PretrainedWeightsUnavailableError,
    StateDictMismatchError,
    WeightFileError,
    WeightFileNotFoundError,
    read_weight_file,
)

__all__ = [
    "ALIASES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SEED_NETWORKS",
    "ClassifierMeta",
    "PretrainedWeightsUnavailableError",
    "StateDictMismatchError",
    "UnknownNetworkError",
    "WeightFileError",
    "WeightFileNotFoundError",
    "build_classifier",
    "checkpoint_backbone",
    "default_input_size",
    "hubs",
    "load_pretrained",
    "network_names",
    "read_weight_file",
    "resolve_device",
    "resolve_network",
    "torchvision_classifiers",
    "weights",
]
