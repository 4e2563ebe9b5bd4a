"""Extra forward passes for perturbation methods: the network after a layer, replayed.

Ablation-CAM changes one layer's activations and reads the class score: only the part of the
network *after* the layer sees the change. :func:`split_after` cuts that part off with
``torch.fx`` (the layer kept as one leaf call); :class:`PassTools` replays it on batches of
modified activations, after checking on the forward's own activations that the cut-off part
reproduces the model's logits. Where the model cannot be traced, the layer is called more than
once, or the part after it also reads earlier values (a skip connection around the layer), or
the check fails, each replay is a full forward with the layer's output replaced (always right,
only slower).

Like the engine, nothing here keeps a hook or changes a flag beyond one call.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(weights=None).eval()
    >>> tail = split_after(model, "layer4")
    >>> x = torch.rand(1, 3, 64, 64)
    >>> feats = torch.nn.Sequential(*list(model.children())[:-2])(x)
    >>> torch.allclose(tail(feats), model(x), atol=1e-5)
    True
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from lightning_cam.engine.layers import get_layer
from lightning_cam.engine.targets import class_logits, extract_logits, graph_output_kind
from lightning_cam.engine.wrappers import eager_forward

_TAILS: weakref.WeakKeyDictionary[nn.Module, dict[Any, Any]] = weakref.WeakKeyDictionary()


class _LeafTracer(fx.Tracer):
    def __init__(self, leaf: str) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name == self.leaf or super().is_leaf_module(
            m, module_qualified_name
        )


def split_after(model: nn.Module, layer: str) -> fx.GraphModule | None:
    """The part of ``model`` after ``layer`` as a module ``layer_output -> model_output``.

    Returns ``None`` where it cannot be cut off cleanly: the model does not trace with
    ``torch.fx``, the layer is called more or less than once, or the rest of the network also
    reads values computed before the layer. The returned module shares the model's submodules
    and parameters (no copy). Cached per model and layer.
    """
    # Keyed by the modules' identities too: replacing a submodule makes a new split.
    key = (layer, tuple(id(m) for m in model.modules()))
    cache = _TAILS.setdefault(model, {})
    if key in cache:
        return cache[key]
    tail: fx.GraphModule | None = None
    try:
        graph = _LeafTracer(layer).trace(model)
        nodes = list(graph.nodes)
        pivots = [n for n in nodes if n.op == "call_module" and n.target == layer]
        if len(pivots) == 1:
            pivot = pivots[0]
            idx = nodes.index(pivot)
            before = set(nodes[: idx + 1])
            after = nodes[idx + 1 :]
            # Values from before the layer that the rest reads: only parameters / buffers
            # (get_attr) can be carried over; anything computed there cannot.
            carried = [
                inp
                for n in after
                for inp in n.all_input_nodes
                if inp in before and inp is not pivot
            ]
            if all(c.op == "get_attr" for c in carried) and not any(
                n.op == "placeholder" for n in after
            ):
                new = fx.Graph()
                env: dict[fx.Node, fx.Node] = {pivot: new.placeholder("activation")}
                for c in dict.fromkeys(carried):
                    env[c] = new.node_copy(c)
                for n in after:
                    env[n] = new.node_copy(n, lambda x: env[x])
                tail = fx.GraphModule(model, new)
    except Exception:  # noqa: BLE001 - any tracing failure means "cannot split": fall back
        tail = None
    for old in [k for k in cache if k[0] == layer]:  # a split of an older structure
        del cache[old]
    cache[key] = tail
    return tail


class PassTools:
    """The extra-pass tools a perturbation method gets for one layer of one forward.

    Args:
        model: The borrowed model (eval mode, set up by the engine).
        layer: Dotted name of the layer.
        images: ``(B, C, H, W)`` the explained inputs.
        activations: ``(B, K, *spatial)`` what the layer output for them.
        logits: ``(B, num_classes)`` the forward's logits (to check a replay against).
        layer_gradients: ``(images, ids) -> (activations, gradients)``, from the engine.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        images: torch.Tensor,
        activations: torch.Tensor,
        logits: torch.Tensor | None,
        layer_gradients: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        self.model = model
        self.layer = layer
        self.images = images
        self.activations = activations
        self.logits = logits
        self.layer_gradients = layer_gradients
        self._tail: fx.GraphModule | None | bool = False  # False: not decided yet
        #: How replays ran: "split" (the network after the layer only) or "full".
        self.replay_mode: str | None = None

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of ``x`` ``(N, C, H, W)``, no grad."""
        with torch.no_grad():
            return class_logits(extract_logits(self.model(x))).detach()

    def _full(self, acts: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        def swap(_m: nn.Module, _i: Any, _o: Any) -> torch.Tensor:
            return acts.to(_o.dtype) if isinstance(_o, torch.Tensor) else acts

        handle = get_layer(self.model, self.layer).register_forward_hook(swap)
        try:
            return extract_logits(self.model(self.images[rows.to(self.images.device)]))
        finally:
            handle.remove()

    def _decide(self) -> fx.GraphModule | None:
        tail = split_after(self.model, self.layer)
        if tail is not None and self.logits is not None:
            try:
                # .forward, not __call__: GraphModule's call wrapper prints a failing trace to
                # stderr, and a failure here only means "cannot split".
                out = extract_logits(tail.forward(self.activations.to(self.images.dtype)))
                ref = self.logits.float()
                tol = 1e-4 * max(1.0, float(ref.abs().max()))
                if out.shape != ref.shape or not torch.allclose(
                    out.float(), ref, rtol=1e-4, atol=tol
                ):
                    tail = None
            except Exception:  # noqa: BLE001 - a tail that fails to run: fall back
                tail = None
        elif self.logits is None:
            tail = None
        return tail

    def replay(
        self, acts: torch.Tensor, rows: torch.Tensor, ids: torch.Tensor | None
    ) -> torch.Tensor:
        """Class scores ``(N,)`` when the layer outputs ``acts`` for images ``rows``; with
        ``ids=None`` every class score ``(N, num_classes)`` (binary heads as two classes).

        Without gradients, unless ``acts`` requires grad and grad mode is on: then the scores
        are differentiable in ``acts`` (Shapley-CAM and Finer-CAM differentiate them, twice
        for Shapley-CAM's Hessian-vector product).
        """
        if self._tail is False:
            with torch.no_grad():
                self._tail = self._decide()
            self.replay_mode = "split" if self._tail is not None else "full"
        tail = self._tail
        with torch.set_grad_enabled(torch.is_grad_enabled() and acts.requires_grad):
            if isinstance(tail, fx.GraphModule):
                logits = extract_logits(tail(acts.to(self.images.dtype)))
            else:
                logits = self._full(acts, rows)
            logits = class_logits(logits)
            if ids is None:
                return logits
            return logits.gather(1, ids.to(logits.device)[:, None])[:, 0]


class LogitsOf(nn.Module):
    """The class scores of ``model`` as a module: ``images (N, C, H, W) -> (N, num_classes)``,
    read as :class:`~lightning_cam.engine.targets.ClassTarget` reads them (the logits of any
    output it accepts; a single-logit binary head ``(B, 1)`` as ``[-z, z]``, a sigmoid head's
    ``p`` as ``[1 - p, p]``). The model runs eagerly (:func:`eager_forward`). What the
    attribution methods (captum) are given; DeepLift hooks its submodules.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raw = extract_logits(eager_forward(self.model)(images))
        return class_logits(raw, sigmoid=graph_output_kind(raw) == "sigmoid")
