"""The method registry: every CAM method of lightning-cam, in one place.

:data:`METHODS` maps each canonical name to a :class:`Method` — its public class name, kind
(``gradient``: weights from activations and gradients, one forward + one backward shared by all;
``activation``: activations only, no backward; ``perturbation``: extra forward passes), paper,
aliases and computation. The public classes (``lc.GradCAM`` ... ``lc.ScoreCAM``), ``explain`` /
``Explainer``, the callbacks and the tools all read it; adding a method is one function (in
:mod:`.gradient`, :mod:`.activation` or :mod:`.perturbation`) plus one :func:`register` call.

Example:
    >>> import torch
    >>> A = torch.rand(2, 8, 7, 7); g = torch.randn(2, 8, 7, 7)
    >>> cam = combine(A, gradcam_weights(A, g))
    >>> cam.shape
    torch.Size([2, 7, 7])
    >>> METHODS["layercam"].kind, method_name("Score-CAM")
    ('gradient', 'scorecam')
"""

from __future__ import annotations

from lightning_cam.methods.activation import cam_weights, eigencam_map
from lightning_cam.methods.attention import legrad_map
from lightning_cam.methods.attribution import (
    deeplift_map,
    gradient_shap_map,
    integrated_gradients_map,
    occlusion_map,
    saliency_map,
    smoothgrad_map,
    vargrad_map,
)
from lightning_cam.methods.core import (
    KINDS,
    Kind,
    LayerPass,
    Method,
    WeightFn,
    combine,
    normalize_maps,
    upsample,
)
from lightning_cam.methods.fusion import FUSE_MODES, check_fuse, fuse_maps
from lightning_cam.methods.gradient import (
    eigengradcam_map,
    gradcam_elementwise_weights,
    gradcam_weights,
    gradcampp_weights,
    hirescam_weights,
    layercam_fuse_scale,
    layercam_weights,
    xgradcam_weights,
)
from lightning_cam.methods.perturbation import (
    ablationcam_weights,
    scorecam_weights,
    smoothgradcampp_weights,
)
from lightning_cam.methods.recent import (
    fem_weights,
    finercam_weights,
    kpcacam_map,
    segeigencam_map,
    shapleycam_weights,
)

#: Registry of methods by canonical name. Names are what users pass as ``methods=``.
METHODS: dict[str, Method] = {}

#: Methods computed for classifiers when none are given: the original Grad-CAM.pytorch tool's
#: Grad-CAM and Grad-CAM++ (``explain_classifier``, ``CAMWriter``, ``lightning-cam explain``).
DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "gradcam++")

#: Methods the detection explainers (and ``lightning-cam detect``) compute when none are given:
#: EigenGrad-CAM, the method that localised the detections of the shapes detector best at its
#: default layer (pointing game 0.72 against 0.40 for Grad-CAM; 0.6 % of the map on other
#: objects against 6.7 %; ``benchmarks/detection_quality.md``).
DEFAULT_DETECTION_METHODS: tuple[str, ...] = ("eigengradcam",)
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(" ", "-")


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (its name and aliases must be new)."""
    keys = list(dict.fromkeys(
        [_key(method.name), *(_key(a) for a in method.aliases), _key(method.class_name)]
    ))
    taken = [k for k in keys if k in _ALIASES]
    if method.name in METHODS or taken:
        raise ValueError(f"method name(s) {taken or [method.name]} already registered")
    METHODS[method.name] = method
    for k in keys:
        _ALIASES[k] = method.name
        _ALIASES[k.replace("-", "")] = method.name
    return method


def method_name(method: str) -> str:
    """Return the canonical method name for ``method`` (case and common spellings tolerated).

    Raises:
        TypeError: ``method`` is not a string.
        ValueError: For an unknown method; the message lists the known ones.
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    key = _key(method)
    found = _ALIASES.get(key, _ALIASES.get(key.replace("-", "")))
    if found is None:
        raise ValueError(f"Unknown method {method!r}; expected one of {sorted(METHODS)}.")
    return found


def get_method(method: str) -> Method:
    """The :class:`Method` registered under ``method`` (any accepted spelling)."""
    return METHODS[method_name(method)]


# --------------------------------------------------------------------------- the registry
register(Method(
    "gradcam", "GradCAM", "gradient",
    "Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via Gradient-based "
    "Localization, ICCV 2017",
    gradcam_weights, title="Grad-CAM", aliases=("grad-cam",),
))
register(Method(
    "gradcam++", "GradCAMPlusPlus", "gradient",
    "Chattopadhyay et al., Grad-CAM++: Improved Visual Explanations for Deep Convolutional "
    "Networks, WACV 2018",
    gradcampp_weights, title="Grad-CAM++",
    aliases=("grad-cam++", "gradcampp", "gradcamplusplus", "gradcam-pp", "gradcampp-"),
))
register(Method(
    "hirescam", "HiResCAM", "gradient",
    "Draelos & Carin, Use HiResCAM instead of Grad-CAM for faithful explanations of "
    "convolutional neural networks, arXiv 2011.08891, 2020",
    hirescam_weights, title="HiRes-CAM", aliases=("hires-cam",),
))
register(Method(
    "gradcam-elementwise", "GradCAMElementWise", "gradient",
    "element-wise variant of Grad-CAM (Selvaraju et al., ICCV 2017), as in pytorch-grad-cam",
    gradcam_elementwise_weights, title="Grad-CAM element-wise",
    aliases=("grad-cam-elementwise", "gradcamelementwise"),
))
register(Method(
    "xgradcam", "XGradCAM", "gradient",
    "Fu et al., Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs, "
    "BMVC 2020",
    xgradcam_weights, title="XGrad-CAM", aliases=("xgrad-cam", "axiom-gradcam"),
))
register(Method(
    "layercam", "LayerCAM", "gradient",
    "Jiang et al., LayerCAM: Exploring Hierarchical Class Activation Maps for Localization, "
    "IEEE TIP 2021",
    layercam_weights, title="Layer-CAM", aliases=("layer-cam",), fuse_scale=layercam_fuse_scale,
))
register(Method(
    "eigengradcam", "EigenGradCAM", "gradient",
    "Eigen-CAM (Muhammad & Yeasin, IJCNN 2020) of gradient x activation, as in "
    "pytorch-grad-cam",
    eigengradcam_map, returns="map", title="EigenGrad-CAM", aliases=("eigen-grad-cam",),
))
register(Method(
    "eigencam", "EigenCAM", "activation",
    "Muhammad & Yeasin, Eigen-CAM: Class Activation Map using Principal Components, IJCNN 2020",
    eigencam_map, returns="map", title="Eigen-CAM", aliases=("eigen-cam",),
))
register(Method(
    "cam", "CAM", "activation",
    "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016",
    cam_weights, title="CAM", aliases=("class-activation-map",), relu=False,
    needs_class_target=True,
))
register(Method(
    "scorecam", "ScoreCAM", "perturbation",
    "Wang et al., Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural "
    "Networks, CVPR workshops 2020",
    scorecam_weights, title="Score-CAM", aliases=("score-cam",),
    needs_class_target=True,
))
register(Method(
    "ablationcam", "AblationCAM", "perturbation",
    "Desai & Ramaswamy, Ablation-CAM: Visual Explanations for Deep Convolutional Network via "
    "Gradient-free Localization, WACV 2020",
    ablationcam_weights, title="Ablation-CAM", aliases=("ablation-cam",),
    needs_class_target=True,
))
register(Method(
    "smoothgradcam++", "SmoothGradCAMPlusPlus", "perturbation",
    "Omeiza et al., Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for "
    "Deep Convolutional Neural Network Models, arXiv 1908.01224, 2019",
    smoothgradcampp_weights, title="Smooth Grad-CAM++",
    aliases=("smooth-grad-cam++", "smoothgradcampp", "smoothgradcamplusplus"),
    needs_class_target=True,
))
register(Method(
    "fem", "FEM", "activation",
    "Fuad et al., Features understanding in 3D CNNs for actions recognition in video, "
    "IPTA 2020",
    fem_weights, title="FEM", aliases=("feature-explanation-method",),
))
register(Method(
    "kpcacam", "KPCACAM", "activation",
    "Karmani et al., KPCA-CAM: Visual Explainability of Deep Computer Vision Models using "
    "Kernel PCA, arXiv 2410.00267, 2024",
    kpcacam_map, returns="map", title="KPCA-CAM", aliases=("kpca-cam", "kpca_cam"),
))
register(Method(
    "segeigencam", "SegEigenCAM", "gradient",
    "Chung & Ying, Seg-Eigen-CAM: Eigen-Value-Based Visual Explanations for Semantic "
    "Segmentation Models, Applied Sciences 2025",
    segeigencam_map, returns="map", title="Seg-Eigen-CAM", aliases=("seg-eigen-cam",),
))
register(Method(
    "shapleycam", "ShapleyCAM", "perturbation",
    "Cai, CAMs as Shapley Value-based Explainers, arXiv 2501.06261, 2025",
    shapleycam_weights, title="Shapley-CAM", aliases=("shapley-cam",),
    needs_class_target=True,
))
register(Method(
    "finercam", "FinerCAM", "perturbation",
    "Zhang, Gu et al., Finer-CAM: Spotting the Difference Reveals Finer Details for Visual "
    "Explanation, CVPR 2025",
    finercam_weights, title="Finer-CAM", aliases=("finer-cam",),
    needs_class_target=True,
))

# Input attributions, computed by captum (optional; see lightning_cam.methods.attribution).
register(Method(
    "integrated_gradients", "IntegratedGradients", "attribution",
    "Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017 (captum)",
    integrated_gradients_map, returns="map", title="Integrated Gradients",
    aliases=("ig", "integratedgradients"), needs_class_target=True,
))
register(Method(
    "smoothgrad", "SmoothGrad", "attribution",
    "Smilkov et al., SmoothGrad: removing noise by adding noise, arXiv 1706.03825, 2017 "
    "(captum NoiseTunnel)",
    smoothgrad_map, returns="map", title="SmoothGrad", aliases=("smooth-grad",),
    needs_class_target=True,
))
register(Method(
    "vargrad", "VarGrad", "attribution",
    "Adebayo et al., Local Explanation Methods for Deep Neural Networks Lack Sensitivity to "
    "Parameter Values, ICLR workshops 2018 (captum NoiseTunnel)",
    vargrad_map, returns="map", title="VarGrad", aliases=("var-grad",),
    needs_class_target=True,
))
register(Method(
    "occlusion", "Occlusion", "attribution",
    "Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014 (captum)",
    occlusion_map, returns="map", title="Occlusion", needs_class_target=True,
))
register(Method(
    "gradient_shap", "GradientShap", "attribution",
    "Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017 "
    "(captum GradientShap)",
    gradient_shap_map, returns="map", title="GradientShap", aliases=("gradientshap",),
    needs_class_target=True,
))
register(Method(
    "deeplift", "DeepLift", "attribution",
    "Shrikumar et al., Learning Important Features Through Propagating Activation "
    "Differences, ICML 2017 (captum)",
    deeplift_map, returns="map", title="DeepLift", aliases=("deep-lift",),
    needs_class_target=True,
))
register(Method(
    "saliency", "Saliency", "attribution",
    "Simonyan et al., Deep Inside Convolutional Networks: Visualising Image Classification "
    "Models and Saliency Maps, ICLR workshops 2014 (captum)",
    saliency_map, returns="map", title="Saliency", aliases=("vanilla-gradient",),
    needs_class_target=True,
))
register(Method(
    "legrad", "LeGrad", "attribution",
    "Bousselham et al., LeGrad: An Explainability Method for Vision Transformers via Feature "
    "Formation Sensitivity, arXiv 2404.03214, 2024",
    legrad_map, returns="map", title="LeGrad", aliases=("le-grad",), needs_class_target=True,
    doc_example=(
        "    >>> import torch, torchvision\n"
        "    >>> vit = torchvision.models.VisionTransformer(32, 8, num_layers=2, num_heads=2,\n"
        "    ...     hidden_dim=16, mlp_dim=32, num_classes=5)\n"
        "    >>> LeGrad(vit)(torch.rand(2, 3, 32, 32), target=3).shape\n"
        "    torch.Size([2, 32, 32])"
    ),
))

__all__ = [
    "DEFAULT_DETECTION_METHODS",
    "DEFAULT_METHODS",
    "FUSE_MODES",
    "KINDS",
    "METHODS",
    "Kind",
    "LayerPass",
    "Method",
    "WeightFn",
    "check_fuse",
    "combine",
    "fuse_maps",
    "get_method",
    "gradcam_weights",
    "gradcampp_weights",
    "method_name",
    "normalize_maps",
    "register",
    "upsample",
]
