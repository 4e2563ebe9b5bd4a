"""lightning-cam: the CAM methods of the field (Grad-CAM, Grad-CAM++, HiRes-CAM, XGrad-CAM,
Layer-CAM, Eigen-CAM, CAM, Score-CAM, Ablation-CAM, Smooth Grad-CAM++ ...), guided backprop and
guided Grad-CAM for PyTorch models, as PyTorch Lightning callbacks and standalone tools.

One class per registered method (:data:`lightning_cam.methods.METHODS`), generated from the
registry: ``lc.LayerCAM``, ``lc.ScoreCAM`` ...

Example:
    >>> import torch, torchvision
    >>> import lightning_cam as lc
    >>> model = torchvision.models.resnet18(weights=None)
    >>> lc.GradCAM(model, "layer4")(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 64, 64])
"""

from typing import TYPE_CHECKING

from lightning_cam import _moved

_moved.install()  # lightning_cam.viz, lightning_cam.layouts ... keep importing (see _moved.py)

from lightning_cam.engine import Explainer, Explanation, targets  # noqa: E402  (lc.targets.X)
from lightning_cam.engine.cam import (  # noqa: E402
    CAM_CLASSES,
    GuidedBackprop,
    GuidedGradCAM,
    explain,
    explain_segmentation,
)
from lightning_cam.engine.layers import default_layer, get_layer  # noqa: E402
from lightning_cam.engine.multilabel import explain_multilabel  # noqa: E402
from lightning_cam.engine.targets import (  # noqa: E402
    ClassTarget,
    EmbeddingTarget,
    FinerTarget,
    MultiLabelTarget,
    RegressionTarget,
    SegmentationTarget,
    TextSimilarityTarget,
)
from lightning_cam.methods import METHODS  # noqa: E402

if TYPE_CHECKING:  # the generated classes, for IDEs and type checkers
    from lightning_cam.engine.cam import (  # noqa: F401
        CAM,
        FEM,
        KPCACAM,
        AblationCAM,
        DeepLift,
        EigenCAM,
        EigenGradCAM,
        FinerCAM,
        GradCAM,
        GradCAMElementWise,
        GradCAMPlusPlus,
        GradientShap,
        HiResCAM,
        IntegratedGradients,
        LayerCAM,
        LeGrad,
        Occlusion,
        Saliency,
        ScoreCAM,
        SegEigenCAM,
        ShapleyCAM,
        SmoothGrad,
        SmoothGradCAMPlusPlus,
        VarGrad,
        XGradCAM,
    )

from lightning_cam._version import __version__ as __version__  # noqa: E402

# GradCAM, GradCAMPlusPlus, HiResCAM, ..., ScoreCAM: one class per registered method.
globals().update(CAM_CLASSES)

# Lightning-dependent parts load on first use, so that the engine imports fast on its own.
_LAZY = {
    "CAMCallback": "lightning_cam.callbacks",
    "GradCAMCallback": "lightning_cam.callbacks",
    "GradCAMPlusPlusCallback": "lightning_cam.callbacks",
    "CAMWriter": "lightning_cam.predict",
    "explain_classifier": "lightning_cam.tools.classifier",
    "ClassifierExplainer": "lightning_cam.tools.classifier",
    "ClassifierExplanation": "lightning_cam.tools.classifier",
    "ImageFailure": "lightning_cam.tools.classifier",
    "build_classifier": "lightning_cam.zoo",
    "ClassifierMeta": "lightning_cam.zoo",
    "PretrainedWeightsUnavailableError": "lightning_cam.zoo",
}


#: Subpackages and modules reachable as attributes (``lc.metrics``), imported on first use.
_SUBMODULES = frozenset({
    "callbacks", "cli", "data", "detection", "engine", "errors", "methods", "metrics", "models",
    "predict", "targets", "tools", "zoo",
})


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"lightning_cam.{name}")
    raise AttributeError(f"module 'lightning_cam' has no attribute {name!r}")


__all__ = [
    "ClassifierExplainer",
    "ClassifierExplanation",
    "ClassifierMeta",
    "ImageFailure",
    "PretrainedWeightsUnavailableError",
    "build_classifier",
    "explain_classifier",
    "CAMCallback",
    "CAMWriter",
    "GradCAMCallback",
    "GradCAMPlusPlusCallback",
    "ClassTarget",
    "FinerTarget",
    "Explainer",
    "Explanation",
    "GuidedBackprop",
    "GuidedGradCAM",
    "METHODS",
    "default_layer",
    "explain",
    "explain_segmentation",
    "get_layer",
    "SegmentationTarget",
    "MultiLabelTarget",
    "RegressionTarget",
    "EmbeddingTarget",
    "TextSimilarityTarget",
    "explain_multilabel",
    "targets",
    *CAM_CLASSES,
]
