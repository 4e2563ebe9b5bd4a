"""Perturbation methods: channel weights from extra forward passes, batched.

Each function reads a :class:`~lightning_cam.methods.core.LayerPass` and runs its extra passes
through the tools the engine put in it (``forward_logits``, ``replay``, ``layer_gradients``), at
most ``max_batch`` inputs per pass (``None``: a memory-bounded size).

Example:
    >>> import torch, torchvision
    >>> import lightning_cam as lc
    >>> model = torchvision.models.resnet18(weights=None, num_classes=4)
    >>> lc.AblationCAM(model, "layer4")(torch.rand(1, 3, 64, 64), target=1).shape
    torch.Size([1, 64, 64])
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from lightning_cam.methods.core import LayerPass, chunk_size, spatial_dims
from lightning_cam.methods.gradient import gradcampp_from_moments

#: Default input MiB per Score-CAM forward when ``max_batch`` is None (26 images at 112 px).
SCORE_BATCH_MB = 4.0


def _need_images(job: LayerPass, method: str) -> torch.Tensor:
    if job.images is None:
        raise ValueError(f"method {method!r} needs the input images; this surface has none")
    return job.images


def scorecam_weights(
    job: LayerPass, upsample_first: bool = True, align_corners: bool = False
) -> torch.Tensor:
    """Score-CAM (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
    Convolutional Neural Networks", CVPR workshops 2020, Algorithm 1).

    ``H^k = s(Up(A^k))`` (bilinear to the input, then min-max to [0, 1] per channel),
    ``S^c_k = y^c(X ∘ H^k) - y^c(X_b)`` (pre-softmax class score of the masked input; the
    baseline term is the same for every ``k`` and cancels below), ``w^c = softmax_k(S^c)``,
    ``L^c = ReLU(sum_k w^c_k A^k)``.

    Cost at its floor: one forward per *live* channel (batched); every channel whose mask is
    constant (all zero after the min-max) masks any image to zeros, so all of them — of every
    image — share one forward of a zero image.

    Args:
        job: The layer's pass (needs ``images``, class ids and ``forward_logits``).
        upsample_first: ``True`` (the paper): upsample, then min-max. ``False``: min-max at the
            layer's resolution, then upsample (torchcam's order).
        align_corners: Of the bilinear upsampling (pytorch-grad-cam uses ``True``).

    Returns:
        ``(B, K, 1, 1)`` weights.
    """
    images = _need_images(job, "scorecam")
    ids = job.require_class_ids("scorecam")
    a = job.activations
    b, k = a.shape[:2]
    size = tuple(images.shape[2:])
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    flat = a.float().flatten(2)
    live = flat.amax(dim=2) > flat.amin(dim=2)  # (B, K): a constant channel masks to zero
    scores = torch.empty(b, k, device=a.device)
    if not bool(live.all()):
        zero_logits = job.forward_logits(images.new_zeros((1, *images.shape[1:])))[0]
        scores[:] = zero_logits[ids.to(zero_logits.device)].float()[:, None]
    rows, chans = live.nonzero(as_tuple=True)
    # CPU forwards run fastest in small batches (cache-resident activations): ~4 MiB of input.
    step = chunk_size(job.max_batch, images[0], budget_mb=SCORE_BATCH_MB)

    def masks_of(sel_rows: torch.Tensor, sel_chans: torch.Tensor) -> torch.Tensor:
        m = a[sel_rows, sel_chans].float()[:, None]  # (n, 1, *spatial)
        if upsample_first:
            m = F.interpolate(m, size=size, mode=mode, align_corners=align_corners)
        lo = m.flatten(1).amin(dim=1).view(-1, *([1] * (m.dim() - 1)))
        hi = m.flatten(1).amax(dim=1).view(-1, *([1] * (m.dim() - 1)))
        rng = hi - lo
        m = torch.where(rng > 0, (m - lo) / torch.where(rng > 0, rng, torch.ones_like(rng)), 0.0)
        if not upsample_first:
            m = F.interpolate(m, size=size, mode=mode, align_corners=align_corners)
        return m

    for i in range(0, rows.numel(), step):
        r, c = rows[i : i + step], chans[i : i + step]
        masked = images[r] * masks_of(r, c).to(images.dtype)
        logits = job.forward_logits(masked)
        scores[r, c] = logits.gather(1, ids[r].to(logits.device)[:, None])[:, 0].float()
    weights = torch.softmax(scores, dim=1)
    return weights.view(b, k, *([1] * len(spatial_dims(a))))


def ablationcam_weights(job: LayerPass) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep
    Convolutional Network via Gradient-free Localization", WACV 2020, eq. 3).

    ``w^c_k = (y^c - y^c_k) / y^c`` with ``y^c_k`` the class score when channel ``k`` of the
    layer is set to zero, ``L^c = ReLU(sum_k w^c_k A^k)``. The division is by ``|y^c|`` here
    (by ``y^c`` in the paper and pytorch-grad-cam): the same map where ``y^c > 0``, and not the
    *negated* evidence where the score is negative (a per-sample positive factor does not change
    a normalised map); where ``y^c = 0`` the weights are ``y^c - y^c_k``.

    The ablated activations only change what comes after the layer: the engine's ``replay``
    runs only that part of the network (split off with ``torch.fx`` where the model allows,
    checked against the forward's own scores, else a full forward with the layer's output
    replaced), one batch of ablated copies at a time.

    Returns:
        ``(B, K, 1, ..., 1)`` weights.
    """
    ids = job.require_class_ids("ablationcam")
    a = job.activations
    b, k = a.shape[:2]
    base = job.replay(a, torch.arange(b, device=a.device), ids).float()  # (B,)
    step = chunk_size(job.max_batch, a[0])
    ablated = torch.empty(b, k, device=a.device)
    for i in range(b):
        for j in range(0, k, step):
            n = min(step, k - j)
            copies = a[i : i + 1].expand(n, *a.shape[1:]).clone()
            copies[torch.arange(n), torch.arange(j, j + n)] = 0
            rows = torch.full((n,), i, dtype=torch.long, device=a.device)
            ablated[i, j : j + n] = job.replay(copies, rows, ids[rows]).float()
    drop = base[:, None] - ablated
    denom = base.abs()[:, None]
    weights = torch.where(denom > 0, drop / torch.where(denom > 0, denom, 1.0), drop)
    return weights.view(b, k, *([1] * len(spatial_dims(a))))


#: Smooth Grad-CAM++ defaults: noisy samples per image, noise std (input units), seed.
SMOOTH_SAMPLES, SMOOTH_STD, SMOOTH_SEED = 4, 0.3, 0


def _image_noise(image: torch.Tensor, num_samples: int, seed: int) -> torch.Tensor:
    """``(n, C, H, W)`` noise for one image, a function of ``seed`` and the image's content only
    (its bytes hashed), never of the batch it came in."""
    digest = hashlib.blake2b(
        image.detach().float().cpu().contiguous().numpy().tobytes(), digest_size=8,
        key=int(seed).to_bytes(8, "little", signed=True),
    ).digest()
    gen = torch.Generator(device=image.device).manual_seed(
        int.from_bytes(digest, "little") & (2**63 - 1)
    )
    return torch.randn(
        (num_samples, *image.shape), generator=gen, device=image.device, dtype=image.dtype
    )


def smoothgradcampp_weights(
    job: LayerPass,
    num_samples: int = SMOOTH_SAMPLES,
    std: float = SMOOTH_STD,
    seed: int = SMOOTH_SEED,
) -> torch.Tensor:
    """Smooth Grad-CAM++ (Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level
    Visualization Technique for Deep Convolutional Neural Network Models", arXiv 1908.01224,
    2019).

    Grad-CAM++'s eq. 19 with every derivative averaged over ``n`` noisy copies
    ``X + N(0, std^2)`` of the input (SmoothGrad)::

        D1 = mean_n g_n,  D2 = mean_n g_n^2,  D3 = mean_n g_n^3
        alpha^k_ij = D2 / (2 D2 + sum_ab A^k_ab D3),  w_k = sum_ij alpha^k_ij ReLU(D1)

    with ``A`` the activations of the clean input. Each image's noise comes from its own
    generator, seeded with ``seed`` and the image's content: an image gets the same map on
    every call, whichever batch it is in, at whichever position, under any ``max_batch``; the
    global RNG is not touched. Costs ``n`` extra forward + backward passes (batched,
    ``max_batch`` each).

    Returns:
        ``(B, K, 1, ..., 1)`` weights.
    """
    images = _need_images(job, "smoothgradcam++")
    ids = job.require_class_ids("smoothgradcam++")
    a = job.activations
    noise = torch.stack([_image_noise(im, num_samples, seed) for im in images], dim=1)
    noisy = (images[None] + std * noise).flatten(0, 1)  # (n * B, C, H, W), sample-major
    rep_ids = ids.repeat(num_samples)
    step = chunk_size(job.max_batch, images[0], budget_mb=32.0)
    g1 = torch.zeros_like(a, dtype=torch.float32)
    g2 = torch.zeros_like(g1)
    g3 = torch.zeros_like(g1)
    b = a.shape[0]
    for i in range(0, noisy.shape[0], step):
        _, g = job.layer_gradients(noisy[i : i + step], rep_ids[i : i + step])
        g = g.float()
        rows = torch.arange(i, i + g.shape[0], device=a.device) % b
        g1.index_add_(0, rows, g)
        g2.index_add_(0, rows, g * g)
        g3.index_add_(0, rows, g * g * g)
    return gradcampp_from_moments(
        a.float(), g1 / num_samples, g2 / num_samples, g3 / num_samples
    )
