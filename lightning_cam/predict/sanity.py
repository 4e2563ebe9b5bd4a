"""The model-parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018), cascading from the top layer down.

An explanation that does not change when the model's weights are destroyed is not explaining
the model. The test re-initialises the parameters of a copy of the model layer by layer, from
the output down to the input, and measures after each stage how similar each method's maps
are to the trained model's maps on the same images and classes: Spearman rank correlation and
SSIM (structural similarity), both 1 for identical maps. A faithful method's similarity falls
as the cascade proceeds.

Stages: the modules that own parameters, in registration order (for Sequential models and
torchvision's classifiers the order of the forward pass), are randomised from the last one
backwards; the similarity is reported at ``num_stages`` evenly spaced points of the cascade,
the last being "every layer randomised". A module is re-initialised by its own
``reset_parameters()`` (the initialisation it was built with; normalisation layers get their
default affine and statistics), else each parameter is re-drawn from a normal distribution
with the trained values' standard deviation. The copy is seeded: the test is deterministic,
and the user's model is never touched.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    >>> stages = cascade_stages(model, 2)
    >>> [name for name, _ in stages]
    ['layer3.0.conv1', 'conv1']
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lightning_cam.engine import Explainer
from lightning_cam.methods import normalize_maps, upsample

SIMILARITIES = ("spearman", "ssim")


def parametrised_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters (``recurse=False``), in registration order."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    ]


def cascade_stages(model: nn.Module, num_stages: int) -> list[tuple[str, list[nn.Module]]]:
    """Split the top-down cascade into ``num_stages`` cumulative stages.

    Returns:
        ``[(name, modules), ...]``: stage ``s`` re-initialises ``modules`` (in addition to the
        earlier stages'); ``name`` is the lowest module randomised once the stage is done.
    """
    mods = parametrised_modules(model)[::-1]  # top first
    if not mods:
        raise ValueError("the model has no parameters to randomise")
    n = len(mods)
    stages = min(max(int(num_stages), 1), n)
    cuts = [math.ceil(n * (s + 1) / stages) for s in range(stages)]
    out: list[tuple[str, list[nn.Module]]] = []
    start = 0
    for cut in cuts:
        part = mods[start:cut]
        out.append((part[-1][0], [m for _, m in part]))
        start = cut
    return out


@torch.no_grad()
def reinitialise(module: nn.Module) -> None:
    """Re-draw a module's own parameters (``reset_parameters()`` when it has one)."""
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    for p in module.parameters(recurse=False):
        std = float(p.float().std()) if p.numel() > 1 else 0.0
        p.normal_(0.0, std if std > 0 else 0.01)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (average ranks for ties); 0 when either map is
    constant (no ranking to compare)."""
    from scipy.stats import spearmanr

    x, y = a.ravel(), b.ravel()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps in ``[0, 1]`` (scikit-image, data range 1, window up to 7)."""
    from skimage.metrics import structural_similarity

    side = min(a.shape)
    win = min(7, side if side % 2 == 1 else side - 1)
    if win < 3:
        return float(np.array_equal(a, b))
    return float(structural_similarity(a, b, data_range=1.0, win_size=win))


def _maps(
    model: nn.Module,
    images: torch.Tensor,
    class_ids: torch.Tensor,
    layers: Sequence[str],
    methods: Sequence[str],
) -> dict[tuple[str, str], np.ndarray]:
    out = Explainer(model, list(layers), methods=methods)(images, target=class_ids, upsample=False)
    size = tuple(images.shape[2:])
    return {
        (m, n): normalize_maps(upsample(out.cams[m][n], size)).float().cpu().numpy()
        for m in out.cams
        for n in out.cams[m]
    }


def randomisation_test(
    model: nn.Module,
    images: torch.Tensor,
    class_ids: torch.Tensor,
    layers: Sequence[str],
    methods: Sequence[str],
    num_stages: int = 5,
    seed: int = 0,
) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Cascading randomisation on ``images`` ``(N, C, H, W)``, explaining ``class_ids`` ``(N,)``.

    Args:
        model: The trained model (only a deep copy is randomised).
        images: The sample, as the model takes it.
        class_ids: The classes explained (the trained model's), kept through the cascade.
        layers: Layer names (as resolved by the engine).
        methods: Method names.
        num_stages: Points of the cascade at which the similarity is measured.
        seed: Seed of the re-initialisations.

    Returns:
        ``(stage_names, values)``: values ``{"{method}/{layer}/{stage}/{similarity}": (N,)}``
        for ``stage`` in ``0 .. len(stage_names) - 1``.
    """
    # Outside inference mode (Lightning's predict runs in it): a copy made inside it could
    # not take part in autograd.
    with torch.inference_mode(False):
        return _cascade(model, images, class_ids, layers, methods, num_stages, seed)


def _cascade(
    model: nn.Module,
    images: torch.Tensor,
    class_ids: torch.Tensor,
    layers: Sequence[str],
    methods: Sequence[str],
    num_stages: int,
    seed: int,
) -> tuple[list[str], dict[str, torch.Tensor]]:
    twin = copy.deepcopy(model).eval()
    images, class_ids = images.clone(), class_ids.clone()
    trained = _maps(twin, images, class_ids, layers, methods)
    stages = cascade_stages(twin, num_stages)
    values: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        for s, (_name, modules) in enumerate(stages):
            for m in modules:
                cpu = copy.deepcopy(m).cpu()
                reinitialise(cpu)
                m.load_state_dict(cpu.state_dict())
            randomised = _maps(twin, images, class_ids, layers, methods)
            for (method, layer), ref in trained.items():
                got = randomised[(method, layer)]
                key = f"{method}/{layer}/{s}"
                pairs = list(zip(ref, got, strict=True))
                values[f"{key}/spearman"] = torch.tensor(
                    [spearman(r, g) for r, g in pairs], dtype=torch.float64
                )
                values[f"{key}/ssim"] = torch.tensor(
                    [ssim(r, g) for r, g in pairs], dtype=torch.float64
                )
    return [name for name, _ in stages], values
