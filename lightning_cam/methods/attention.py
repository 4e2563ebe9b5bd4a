"""Methods that read a ViT's attention maps: LeGrad.

A pure function of what the engine's ``attention_gradients`` tool gives
(:mod:`lightning_cam.engine.attention`): per block, the gradient of the class score with
respect to that block's attention probabilities.

Example:
    >>> import torch
    >>> from lightning_cam.methods.core import LayerPass
    >>> g = [torch.rand(2, 3, 5, 5), torch.rand(2, 3, 5, 5)]  # 2 blocks, 3 heads, 1 + 2x2 tokens
    >>> job = LayerPass(torch.empty(0), images=torch.rand(2, 3, 16, 16),
    ...                 class_ids=torch.tensor([0, 1]))
    >>> job.attention_gradients = lambda x, ids: (g, 1, (2, 2))
    >>> legrad_map(job).shape
    torch.Size([2, 16, 16])
"""

from __future__ import annotations

import torch

from lightning_cam.methods.core import LayerPass, upsample


def legrad_map(job: LayerPass, layers: int | None = None) -> torch.Tensor:
    """LeGrad (Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via
    Feature Formation Sensitivity", arXiv 2404.03214, 2024 / ICCV 2025).

    Per block ``l``, the class score ``s^l = head(norm(x^l))_c`` that the model's own final norm
    and head give to the block's output tokens ``x^l`` (or the call's target on that output:
    CLIP's image-text similarity ``cos(proj(norm(x^l_cls)), text)``), and its gradient with
    respect to the block's attention probabilities ``P^l`` ``(heads, N, N)``::

        E^l_j = 1/(H N) sum_h sum_i ReLU(d s^l / d P^l_{h,i,j})     (j a patch token)
        E     = 1/|L| sum_{l in L} E^l,   folded to the patch grid, upsampled bilinearly

    (mean over heads and query tokens, the prefix tokens' columns dropped; the official
    implementation sums over layers, the same map after min-max normalisation).

    Args:
        job: The pass (images, class ids, ``None`` for other targets, and the
            ``attention_gradients`` tool, which then scores with the call's target).
        layers: Use the last ``layers`` blocks (``None``: all of them, as the paper; the
            official OpenCLIP wrapper's default is the last two).

    Returns:
        ``(B, H, W)`` map at the input's resolution.
    """
    if job.images is None:
        raise ValueError("method 'legrad' needs the images")
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int)
                               or layers < 1):
        raise ValueError(f"layers must be None or an int >= 1, got {layers!r}")
    grads, prefix, (gh, gw) = job.attention_gradients(job.images, job.class_ids)
    if layers is not None:
        grads = grads[-layers:]
    per_layer = [g.float().relu().mean(dim=(1, 2))[:, prefix:] for g in grads]  # (B, N - p)
    e = torch.stack(per_layer).mean(dim=0)
    return upsample(e.reshape(-1, gh, gw), tuple(job.images.shape[2:]))
