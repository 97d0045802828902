"""Model wiring shared by the explanation methods: record, per block, which token rows went in and
came out (as source maps, see :mod:`vitkit.explain.tokens`), the block outputs a method asks for,
and pick the class each map explains.

:class:`Trace` installs forward hooks on the vision tower's blocks for the duration of a ``with``
and removes them on exit, so a model is never left changed. Attention itself is read through the
ViT's own ``attention_readout`` (never re-computed here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..models.vit import VisionTransformer
from .tokens import StateSnapshot, snapshot, source_map, transition


@dataclass
class Explanation:
    """What every method returns.

    ``maps`` (B, gh, gw) float on the model's patch grid (or evidence grid), larger = more evidence
    for ``target``; ``logits`` (B, K) of the explained forward; ``target`` (B,) the explained class;
    ``forwards`` / ``backwards`` the passes the method cost (the prediction's own forward included).
    """

    method: str
    maps: Tensor
    logits: Tensor
    target: Tensor
    forwards: int = 1
    backwards: int = 0
    extras: dict = field(default_factory=dict)


def pick_target(logits: Tensor, target: int | Sequence[int] | Tensor | None) -> Tensor:
    """Class per image (B,): the given class(es), or the top class of each image when None."""
    B, K = logits.shape
    if target is None:
        return logits.argmax(-1)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(B)
    if t.numel() != B:
        raise ValueError(f"target has {t.numel()} entries for a batch of {B}: give one class or one per image")
    if bool(((t < 0) | (t >= K)).any()):
        raise ValueError(f"target {t.tolist()} is outside the model's {K} classes")
    return t


def class_score(logits: Tensor, target: Tensor) -> Tensor:
    """Sum over the batch of each image's target logit (a scalar to differentiate)."""
    return logits.gather(1, target.view(-1, 1)).sum()


class Trace:
    """Record each block's token rows (and chosen outputs) during the forwards inside ``with``.

    After a forward: ``n0`` original tokens, ``num_prefix``, ``grid``; ``sources(i, "in"|"out")``
    the source map before / after block i; ``transition(i)`` the row transition of block i (None
    when its rows did not change); ``inputs[i]`` the normalised input tokens (``norm1`` output,
    (B, N, C)) of each block in ``keep``, the tokens its attention reads.
    """

    def __init__(self, vis: VisionTransformer, keep: Sequence[int] = ()) -> None:
        self.vis = vis
        self.keep = {i % vis.depth for i in keep}
        self.snaps: dict[tuple[int, str], tuple[StateSnapshot, int]] = {}
        self.inputs: dict[int, Tensor] = {}
        self.n0 = 0
        self.num_prefix = 0
        self.grid: tuple[int, int] = (0, 0)
        self.batch = 0
        self._handles: list = []

    def __enter__(self) -> Trace:
        for i, blk in enumerate(self.vis.blocks):
            self._handles.append(blk.register_forward_pre_hook(self._pre(i), with_kwargs=True))
            self._handles.append(blk.register_forward_hook(self._post(i), with_kwargs=True))
            if i in self.keep:
                self._handles.append(blk.norm1.register_forward_hook(self._norm(i)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @staticmethod
    def _state(args, kwargs):
        return kwargs.get("state", args[1] if len(args) > 1 else None)

    def _pre(self, i: int):
        def hook(module, args, kwargs):
            x, state = args[0], self._state(args, kwargs)
            if state is None:
                raise ValueError("the ViT block was called without a TokenState: explain through model.forward")
            if i == 0:
                self.n0, self.num_prefix, self.grid, self.batch = x.shape[1], state.num_prefix, state.grid, x.shape[0]
            self.snaps[(i, "in")] = (snapshot(state), x.shape[1])

        return hook

    def _post(self, i: int):
        def hook(module, args, kwargs, out):
            self.snaps[(i, "out")] = (snapshot(self._state(args, kwargs)), out.shape[1])

        return hook

    def _norm(self, i: int):
        def hook(module, args, out):
            self.inputs[i] = out

        return hook

    def sources(self, i: int, where: str) -> Tensor:
        snap, n = self.snaps[(i, where)]
        return source_map(snap, n, self.n0, self.batch)

    def transition(self, i: int) -> Tensor | None:
        (a, na), (b, nb) = self.snaps[(i, "in")], self.snaps[(i, "out")]
        if a.index is b.index and a.tome_source is b.tome_source and na == nb:
            return None
        return transition(self.sources(i, "in"), self.sources(i, "out"), na, nb)


def query_rows(vis: VisionTransformer, src: Tensor, n_rows: int) -> Tensor:
    """Weights (B, N) over the final rows of the rows that make the prediction.

    The class token (row 0); DeiT with a distillation head: the mean of the class and distillation
    rows; average pooling: every patch row weighted by the originals it holds.
    """
    B = src.shape[0]
    q = torch.zeros(B, n_rows)
    if vis.head_dist is not None:
        q[:, 0] = q[:, 1] = 0.5
    elif vis.cfg.global_pool == "token":
        q[:, 0] = 1.0
    elif vis.cfg.global_pool == "avg":
        p = vis.num_prefix_tokens
        rows = src[:, p:]
        ok = rows >= 0
        q.scatter_add_(1, rows.clamp_min(0), ok.float())
        q = q / q.sum(1, keepdim=True).clamp_min(1)
    else:
        raise ValueError(f"global_pool={vis.cfg.global_pool!r}: no single query row to explain; "
                         "use 'token' or 'avg' pooling, or Grad-CAM")
    return q


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
