"""ONNX exports of Hugging Face ViT-family models (ViT, DeiT, DINOv2 via ``torch.onnx.export``) → vitkit.

An exported graph keeps the state-dict names of some initializers (biases, norms, tokens) but
stores others anonymously (``onnx::MatMul_123``): Linear weights, transposed to (in, out), and
pieces of a position embedding that the model split before exporting. Every initializer is
therefore resolved through the node that consumes it, never through its order in the file:

=====================================================  ==========================================
named initializer (or an ``Identity`` alias of one)     its own name (the HF state-dict key)
anonymous input of ``/a/b/c/MatMul``                    ``a.b.c.weight`` = transpose (Linear)
anonymous input of ``/a/b/c/Gemm``                      ``a.b.c.weight`` (transposed unless transB)
anonymous input of ``/a/b/c/Add``                       ``a.b.c.bias``
anonymous (1, k, C) inputs of nodes in ``…/embeddings/`` ``embeddings.position_embeddings``: the
                                                        prefix part(s) then the patch part
=====================================================  ==========================================

What the weights cannot tell is read from the graph: the number of heads from the reshape of the
first query projection, LayerNorm eps from ``LayerNormalization`` (or the decomposed ``Add`` of a
scalar), the activation from the MLP's ops (``Gelu``/``Erf`` → GELU, ``Tanh`` → tanh-GELU,
``Sigmoid`` → QuickGELU). The renamed state dict then goes through the Hugging Face converter.

Parts outside the backbone (e.g. a task decoder) are listed in one log line and left out.
Own code rather than onnx2torch: that package rebuilds the graph as foreign modules, whereas
vitkit wants its own ViT with the weights in it (DESIGN.md principle 1).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..models.vit import ViTConfig
from . import hf
from .io import CheckpointError

log = logging.getLogger(__name__)

_ANON = re.compile(r"^(onnx::|/|[0-9]+$)")
_HEAD_KEYS = re.compile(r"^(classifier|cls_classifier|distillation_classifier)\.(weight|bias)$")
_BACKBONE_KEYS = re.compile(r"^(embeddings|encoder|layers|layernorm|pooler)\.")
# transformers 5 names some models' blocks ``layers.N``, earlier versions ``encoder.layer.N``
_LAYERS = re.compile(r"^(?:encoder\.)?layers?\.(\d+)\.")
# the HF module paths of the first layer's query projection and first MLP Linear, across versions
_QUERY = re.compile(r"(?:encoder\.)?layers?\.0\.attention\.(?:attention\.query|q_proj)$")
_FC1 = re.compile(r"(?:encoder\.)?layers?\.0\.(?:intermediate\.dense|mlp\.fc1)$")
_HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "quick_gelu": "quick_gelu"}


def _import_onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError("reading .onnx files needs the 'onnx' extra: pip install 'vitkit[onnx]'") from e
    return onnx


def _module_path(node_name: str) -> str:
    """``/backbone/encoder/layer.0/mlp/fc1/MatMul`` → ``backbone.encoder.layer.0.mlp.fc1``."""
    return ".".join(p for p in node_name.split("/")[:-1] if p)


class _Graph:
    """Constant values of an ONNX graph (initializers, Constant nodes, Identity aliases) and consumers."""

    def __init__(self, model) -> None:
        from onnx import numpy_helper

        g = model.graph
        self.nodes = list(g.node)
        self.values: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.init_names = set(self.values)
        self.alias: dict[str, str] = {}  # Identity output → the initializer it copies
        self.producer = {o: n for n in self.nodes for o in n.output}
        for n in self.nodes:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        self.values[n.output[0]] = numpy_helper.to_array(a.t)
            elif n.op_type == "Identity" and n.input[0] in self.values:
                self.values[n.output[0]] = self.values[n.input[0]]
                self.alias[n.output[0]] = self.alias.get(n.input[0], n.input[0])
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for x in n.input:
                self.consumers.setdefault(x, []).append(n)

    def weights(self) -> dict[str, np.ndarray]:
        """Initializers and their Identity aliases: the values that are model parameters."""
        return {k: v for k, v in self.values.items() if k in self.init_names or k in self.alias}


def _resolve_names(g: _Graph, where: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """{HF state-dict key: array} of every parameter, and anonymous initializers nothing explains."""
    sd: dict[str, np.ndarray] = {}
    pos_parts: dict[str, list[tuple[int, np.ndarray]]] = {}
    unexplained: list[str] = []
    for name, value in g.weights().items():
        if not _ANON.match(name):
            sd[name] = value
            continue
        if name in g.alias:  # an anonymous alias of a named parameter: the name is enough
            continue
        users = [n for n in g.consumers.get(name, []) if n.op_type != "Identity"]
        done = False
        for n in users:
            path = _module_path(n.name)
            if n.op_type == "MatMul" and value.ndim == 2:
                sd[f"{path}.weight"] = value.T
                done = True
            elif n.op_type == "Gemm" and value.ndim == 2 and list(n.input).index(name) == 1:
                trans_b = any(a.name == "transB" and a.i == 1 for a in n.attribute)
                sd[f"{path}.weight"] = value if trans_b else value.T
                done = True
            elif n.op_type == "Add" and value.ndim == 1:
                sd[f"{path}.bias"] = value
                done = True
            elif path.endswith("embeddings") and value.ndim in (3, 4) and value.shape[0] == 1:
                pos_parts.setdefault(path, []).append((int(np.prod(value.shape[1:-1])), value))
                done = True
        if not done and value.size > 1:
            unexplained.append(name)
    for path, parts in pos_parts.items():
        key = f"{path}.position_embeddings"
        if key in sd:
            continue
        # the prefix (class/distillation) positions are the small parts, the patch grid the large one
        parts.sort(key=lambda p: p[0])
        sd[key] = np.concatenate([v.reshape(1, -1, v.shape[-1]) for _, v in parts], axis=1)
    return sd, unexplained


def _split_backbone(sd: dict[str, np.ndarray], where: str) -> tuple[str, dict[str, np.ndarray], list[str]]:
    """(prefix, HF-layout state dict of the backbone and its head, keys of other modules)."""
    anchors = [k for k in sd if k.endswith("embeddings.patch_embeddings.projection.weight")]
    if not anchors:
        raise CheckpointError(
            f"{where}: no ViT patch embedding found (an initializer named '…embeddings.patch_embeddings."
            "projection.weight' consumed by a Conv). vitkit reads ONNX exports of Hugging Face ViT, DeiT and "
            "DINOv2 models made with torch.onnx.export."
        )
    prefix = min(anchors, key=len)[: -len("embeddings.patch_embeddings.projection.weight")]
    kept, other = {}, []
    for k, v in sd.items():
        rest = k[len(prefix):] if k.startswith(prefix) else None
        if rest is not None and _BACKBONE_KEYS.match(rest):
            kept[_LAYERS.sub(r"encoder.layer.\1.", rest)] = v
        elif _HEAD_KEYS.match(k):
            kept[k] = v
        else:
            other.append(k)
    return prefix, kept, other


def _const_ints(g: _Graph, name: str) -> list[int | None]:
    """A shape tensor's entries: ints where constant, None where computed at run time."""
    if name in g.values:
        return [int(x) for x in np.asarray(g.values[name]).reshape(-1)]
    node = g.producer.get(name)
    if node is not None and node.op_type == "Concat":
        out: list[int | None] = []
        for x in node.input:
            out.extend(_const_ints(g, x) if x in g.values else [None])
        return out
    return []


def _num_heads(g: _Graph, prefix: str, dim: int) -> int | None:
    """Heads from the (B, N, heads, head_dim) reshape that follows the first query projection."""
    for n in g.nodes:
        path = _module_path(n.name)
        if n.op_type not in ("MatMul", "Gemm") or not path.startswith(prefix) or not _QUERY.search(path):
            continue
        frontier = [n.output[0]]
        for _ in range(3):  # MatMul → Add (bias) → Reshape
            nxt = []
            for v in frontier:
                for c in g.consumers.get(v, []):
                    if c.op_type == "Reshape":
                        shape = _const_ints(g, c.input[1])
                        if len(shape) >= 2:
                            heads, head_dim = shape[-2], shape[-1]
                            if head_dim is not None and head_dim > 0 and dim % head_dim == 0:
                                return dim // head_dim
                            if heads is not None and heads > 0:
                                return heads
                    nxt.extend(c.output)
            frontier = nxt
    return None


def _norm_eps(g: _Graph, weight_name: str) -> float | None:
    """eps of the LayerNorm whose weight is ``weight_name`` (fused op or decomposed graph)."""
    for n in g.consumers.get(weight_name, []):
        if n.op_type == "LayerNormalization":
            return next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        scope = n.name.rsplit("/", 1)[0] + "/"
        for m in g.nodes:
            if m.op_type == "Add" and m.name.startswith(scope):
                for x in m.input:
                    if x in g.values and g.values[x].size == 1 and x != weight_name:
                        return float(g.values[x].reshape(-1)[0])
    return None


def _activation(g: _Graph, fc1_node) -> str:
    """The op(s) between the first MLP Linear and the second: GELU variants by their ops."""
    seen: set[str] = set()
    frontier = list(fc1_node.output)
    for _ in range(12):
        nxt = []
        for v in frontier:
            for c in g.consumers.get(v, []):
                if c.op_type == "MatMul":
                    continue
                seen.add(c.op_type)
                if c.op_type == "Gelu":
                    tanh = any(a.name == "approximate" and a.s == b"tanh" for a in c.attribute)
                    return "gelu_tanh" if tanh else "gelu"
                nxt.extend(c.output)
        frontier = nxt
    if "Erf" in seen:
        return "gelu"
    if "Tanh" in seen:
        return "gelu_tanh"
    if "Sigmoid" in seen:
        return "quick_gelu"
    return "gelu"


def read(path: str | Path, num_heads: int | None = None) -> tuple[ViTConfig, dict[str, Tensor]]:
    """An ONNX export of an HF ViT/DeiT/DINOv2 → (vitkit ViTConfig, vitkit state dict).

    ``num_heads`` overrides the head count read from the graph (needed only if the export folded the
    attention reshapes away).
    """
    onnx = _import_onnx()
    where = str(path)
    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises protobuf DecodeError and others
        raise CheckpointError(f"{where}: not a readable ONNX file ({e})") from e
    g = _Graph(model)
    named, unexplained = _resolve_names(g, where)
    prefix, sd_np, other = _split_backbone(named, where)
    other += unexplained
    if other:
        log.info("%s: left out %d parameters outside the ViT backbone: %s", where, len(other),
                 ", ".join(sorted(other)))

    dim = sd_np["embeddings.patch_embeddings.projection.weight"].shape[0]
    patch = sd_np["embeddings.patch_embeddings.projection.weight"].shape[-1]
    layers = sorted({int(m.group(1)) for k in sd_np if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    if not layers:
        raise CheckpointError(f"{where}: no transformer layers found under '{prefix}encoder.layer.N'")
    depth = layers[-1] + 1
    _check_complete(sd_np, depth, where, prefix)

    model_type = "dinov2" if "encoder.layer.0.layer_scale1.lambda1" in sd_np else (
        "deit" if "embeddings.distillation_token" in sd_np else "vit")
    n_pos = sd_np["embeddings.position_embeddings"].shape[1]
    n_prefix = 1 + int("embeddings.distillation_token" in sd_np)
    grid = math.isqrt(n_pos - n_prefix)
    if grid * grid != n_pos - n_prefix:
        raise CheckpointError(f"{where}: position embedding of {n_pos} tokens is not a square grid plus "
                              f"{n_prefix} prefix token(s)")
    heads = num_heads or _num_heads(g, prefix, dim)
    if heads is None:
        raise CheckpointError(f"{where}: cannot read the number of attention heads from the graph; pass it, "
                              "e.g. vitkit.load(path, num_heads=6)")
    fc1 = next((n for n in g.nodes if n.op_type in ("MatMul", "Gemm")
                and _FC1.search(_module_path(n.name)[len(prefix):])), None)
    act = _activation(g, fc1) if fc1 is not None else "gelu"
    eps = _norm_eps(g, prefix + "layernorm.weight")
    hf_cfg = {
        "model_type": model_type,
        "hidden_size": dim,
        "num_hidden_layers": depth,
        "num_attention_heads": heads,
        "intermediate_size": sd_np["encoder.layer.0.mlp.fc1.weight"].shape[0]
        if "encoder.layer.0.mlp.fc1.weight" in sd_np else sd_np["encoder.layer.0.intermediate.dense.weight"].shape[0],
        "image_size": grid * patch,
        "patch_size": patch,
        "num_channels": sd_np["embeddings.patch_embeddings.projection.weight"].shape[1],
        "qkv_bias": any(re.search(r"layer\.0\.attention\.(attention\.query|q_proj)\.bias$", k) for k in sd_np),
        "hidden_act": _HF_ACT[act],
        # eps is stored as float32 in the graph: 1e-6 reads 9.99999997e-07
        "layer_norm_eps": float(f"{eps:.6g}") if eps is not None else (1e-6 if model_type == "dinov2" else 1e-12),
    }
    sd = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd_np.items()}
    _, cfg, sd = hf.convert(hf_cfg, sd, where)
    return cfg, sd


def _check_complete(sd: dict[str, np.ndarray], depth: int, where: str, prefix: str) -> None:
    """Fail with the list of what a ViT needs and the graph does not provide."""
    missing = [k for k in ("embeddings.cls_token", "embeddings.position_embeddings",
                           "layernorm.weight") if k not in sd]
    alts = {
        "query": ("attention.attention.query.weight", "attention.q_proj.weight"),
        "key": ("attention.attention.key.weight", "attention.k_proj.weight"),
        "value": ("attention.attention.value.weight", "attention.v_proj.weight"),
        "attention output": ("attention.output.dense.weight", "attention.o_proj.weight"),
        "mlp fc1": ("intermediate.dense.weight", "mlp.fc1.weight"),
        "mlp fc2": ("output.dense.weight", "mlp.fc2.weight"),
        "norm1": ("norm1.weight", "layernorm_before.weight"),
        "norm2": ("norm2.weight", "layernorm_after.weight"),
    }
    for i in range(depth):
        missing += [f"encoder.layer.{i}.{label} weight" for label, keys in alts.items()
                    if not any(f"encoder.layer.{i}.{k}" in sd for k in keys)]
    if missing:
        raise CheckpointError(
            f"{where}: the graph lacks parts a ViT needs (under '{prefix}'): {missing[:12]}"
            + (f" and {len(missing) - 12} more" if len(missing) > 12 else "")
        )
