"""Running a token-reduction method end to end: encode high-resolution images into a token set with
a method applied, score a consumer on it, and time it against dense (interleaved, median).

Devices: images may live anywhere; they are moved to the encoder's device (outside timed regions).
Timing and peak memory: :mod:`vitkit.bench.timing` (synchronised on CUDA). Precision:
``dtype=torch.bfloat16`` (or float16) runs encoder and consumer under ``torch.autocast`` — weights stay
fp32 as the engine trains them, matmuls run in bf16, softmax/LayerNorm in fp32 — and accuracy and
timing use that same path; ``None``/float32 = fp32.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bench.budget import batch_seconds, fit_steps, train_step_seconds
from ..bench.timing import median, peak_mib, precision, synchronize, timed
from ..engine import TrainConfig, model_device
from . import evit, hired, tome
from .consumer import TokenSetConsumer, train_consumer
from .evit import EViTConfig
from .hired import HiREDConfig
from .partitions import TokenSet, encode_partitions, partition
from .reducers import Reducer, reducer_for
from .tome import ToMeConfig
from .wiring import vision_tower

#: a method: None (dense) or (module with apply/remove, its config)
Method = tuple[ModuleType, object] | None


class applied:
    """``with applied(model, method):`` the method is applied inside the block, removed after."""

    def __init__(self, model: nn.Module, method: Method) -> None:
        self.model, self.method = model, method

    def __enter__(self) -> nn.Module:
        if self.method is not None:
            self.method[0].apply(self.model, self.method[1])
        return self.model

    def __exit__(self, *exc) -> None:
        if self.method is not None:
            self.method[0].remove(self.model)


def encode(model: nn.Module, method: Method, images: Tensor, grid: tuple[int, int]) -> TokenSet:
    """Images (B, C, H, W) → token set with ``method`` (already applied; None = dense)."""
    if method is None:
        return Reducer.encode(model, images, grid)
    return reducer_for(method[1]).encode(model, images, grid)


@torch.no_grad()
def page_correct(model: nn.Module, consumer: nn.Module, method: Method, images: Tensor, labels: Tensor,
                 grid: tuple[int, int], batch: int = 50, dtype: torch.dtype | None = None) -> tuple[Tensor, float]:
    """(correct (n,) bool on the CPU: the consumer's prediction on each image's token set is its label, mean
    tokens per image). images (n, C, H, W) and labels (n,) on any device; each batch runs on the encoder's
    device under ``precision(dtype)``. Per-image results allow paired comparisons between methods."""
    dev = model_device(model)
    correct, ntok = [], 0
    with applied(model, method), precision(dev, dtype):
        for i in range(0, len(images), batch):
            ts = encode(model, method, images[i : i + batch].to(dev), grid)
            correct.append(consumer.classify(ts).argmax(-1).cpu() == labels[i : i + batch].cpu())
            ntok += len(ts) * ts.tokens.shape[0]
    return torch.cat(correct), ntok / len(images)


def accuracy(model: nn.Module, consumer: nn.Module, method: Method, images: Tensor, labels: Tensor,
             grid: tuple[int, int], batch: int = 50, dtype: torch.dtype | None = None) -> tuple[float, float]:
    """(accuracy of ``consumer`` on the token sets, mean tokens per image); see :func:`page_correct`."""
    correct, ntok = page_correct(model, consumer, method, images, labels, grid, batch, dtype)
    return int(correct.sum()) / len(correct), ntok


def paired_delta(correct: Tensor, reference: Tensor) -> tuple[float, float]:
    """(accuracy difference, its standard error) of per-image results ``correct`` against ``reference``,
    both (n,) bool on the same images: mean and SE of the paired differences (in fractions, not points)."""
    if correct.shape != reference.shape or correct.ndim != 1:
        raise ValueError(f"paired_delta needs two (n,) results on the same images, got {tuple(correct.shape)} "
                         f"and {tuple(reference.shape)}")
    d = correct.float() - reference.float()
    se = d.std(unbiased=True).item() / len(d) ** 0.5 if len(d) > 1 else float("nan")
    return d.mean().item(), se


def _encode_classify(model: nn.Module, consumer: nn.Module | None, method: Method, images: Tensor,
                     grid: tuple[int, int]) -> None:
    ts = encode(model, method, images, grid)
    if consumer is not None:
        consumer.classify(ts)


@torch.no_grad()
def throughput(model: nn.Module, consumer: nn.Module | None, methods: Mapping[str, Method], images: Tensor,
               grid: tuple[int, int], repeats: int = 5, dtype: torch.dtype | None = None) -> dict[str, dict[str, float]]:
    """Median images/s per method over ``repeats`` rounds, the methods interleaved within a round.

    ``e2e_ips``: partition + encoder (+ consumer); ``consumer_ips``: the consumer alone on the
    method's token set (only with a consumer); ``tokens``: tokens per image. ``images`` (n, C, H, W)
    are moved to the encoder's device first (untimed); on CUDA each timed region starts and ends with
    a synchronize; ``dtype`` as in :func:`precision` (the first round per method is an untimed warm-up).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    dev = model_device(model)
    images = images.to(dev)
    n = len(images)
    sets = {}
    with precision(dev, dtype):
        for name, m in methods.items():  # warm-up, and the token sets for the consumer-side timing
            with applied(model, m):
                sets[name] = encode(model, m, images, grid)
            if consumer is not None:
                consumer.classify(sets[name])
        synchronize(dev)
        e2e: dict[str, list[float]] = {k: [] for k in methods}
        con: dict[str, list[float]] = {k: [] for k in methods}
        for _ in range(repeats):
            for name, m in methods.items():
                with applied(model, m):  # apply/remove outside the timed region
                    e2e[name].append(timed(lambda m=m: _encode_classify(model, consumer, m, images, grid), dev))
                if consumer is not None:
                    con[name].append(timed(lambda name=name: consumer.classify(sets[name]), dev))

    out = {}
    for name in methods:
        row = {"e2e_ips": n / median(e2e[name]), "tokens": float(len(sets[name]))}
        if consumer is not None:
            row["consumer_ips"] = n / median(con[name])
        out[name] = row
    return out


@torch.no_grad()
def dense_token_sets(model: nn.Module, images: Tensor, grid: tuple[int, int], layer: int, batch: int = 32,
                     dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Dense token sets of images (n, C, H, W): tokens (n, P·T, C) in fp32, their layout (partition (P·T,),
    pos (P·T, 2)) and each token's CLS attention at block ``layer`` summed over heads (n, P·T); on the
    encoder's device, under :func:`precision` ``(dtype)``."""
    dev = model_device(model)
    vis = vision_tower(model)
    sets, scores = [], []
    with vis.attention_readout([layer], "cls") as maps, precision(dev, dtype):
        for i in range(0, len(images), batch):
            sets.append(encode_partitions(model, partition(images[i : i + batch].to(dev), grid, vis.cfg.img_size,
                                                           vis.patch_size)))
            a = maps[layer][:, :, vis.num_prefix_tokens :].sum(1)  # (b·P, T)
            scores.append(a.reshape(len(sets[-1].tokens), -1).float())
    return (torch.cat([s.tokens.float() for s in sets]), sets[0].partition[0], sets[0].pos[0], torch.cat(scores))


@torch.no_grad()
def reduced_token_sets(model: nn.Module, method: Method, images: Tensor, grid: tuple[int, int], batch: int = 64,
                       dtype: torch.dtype | None = None) -> TokenSet:
    """The token sets ``method`` gives for images (n, C, H, W), all images stacked (tokens in fp32)."""
    dev = model_device(model)
    parts = []
    with applied(model, method), precision(dev, dtype):
        for i in range(0, len(images), batch):
            parts.append(encode(model, method, images[i : i + batch].to(dev), grid))
    return TokenSet(torch.cat([p.tokens.float() for p in parts]), torch.cat([p.partition for p in parts]),
                    torch.cat([p.pos for p in parts]), parts[0].grid, parts[0].num_partitions)


def closest_throughput(model: nn.Module, consumer: nn.Module | None, reference: tuple[str, Method],
                       candidates: Mapping[str, Method], images: Tensor, grid: tuple[int, int], repeats: int = 3,
                       dtype: torch.dtype | None = None) -> tuple[dict[str, dict[str, float]], str]:
    """Which of ``candidates`` (e.g. ToMe schedules) runs closest to ``reference`` = (name, method) end to end:
    (the :func:`throughput` figures of the reference and every candidate, measured interleaved on images
    (n, C, H, W), and the name of the candidate whose images/s over the reference's is nearest 1)."""
    if not candidates:
        raise ValueError("closest_throughput needs at least one candidate")
    name, method = reference
    probe = throughput(model, consumer, {name: method, **candidates}, images, grid, repeats, dtype=dtype)
    target = probe[name]["e2e_ips"]
    return probe, min(candidates, key=lambda n: abs(probe[n]["e2e_ips"] / target - 1))


@torch.no_grad()
def peak_memory(model: nn.Module, consumer: nn.Module, method: Method, images: Tensor, grid: tuple[int, int],
                dtype: torch.dtype | None = None) -> tuple[float, float]:
    """Peak tensor memory (MiB, :func:`vitkit.bench.timing.peak_mib`) of one forward of images (n, C, H, W):
    end to end, and the consumer alone on the method's token set."""
    dev = model_device(model)
    images = images.to(dev)
    with applied(model, method), precision(dev, dtype):
        e2e = peak_mib(lambda: consumer.classify(encode(model, method, images, grid)), dev)
        ts = encode(model, method, images, grid)
        con = peak_mib(lambda: consumer.classify(ts), dev)
    return e2e, con


def bench_rows(model: nn.Module, consumer: nn.Module, methods: Mapping[str, Method], images: Tensor, labels: Tensor,
               grid: tuple[int, int], timings: Mapping[str, Mapping[str, float]], mem_batch: int,
               dtype: torch.dtype | None = None, on_row: Callable[[str, dict], None] | None = None) -> dict[str, dict]:
    """One row per method (``"dense"`` among them): its :func:`throughput` figures (``timings``), page accuracy,
    tokens per page, peak MiB end to end and consumer-side (on ``mem_batch`` images), the per-page results as a
    "0"/"1" string, and against dense: speed-ups, Δ accuracy in points and its paired standard error (the same
    pages for every method). ``on_row(name, rows)`` after each method (e.g. to save partial results)."""
    rows, correct = {}, {}
    for name, m in methods.items():
        correct[name], ntok = page_correct(model, consumer, m, images, labels, grid, dtype=dtype)
        e2e_mib, con_mib = peak_memory(model, consumer, m, images[:mem_batch], grid, dtype)
        rows[name] = {**timings[name], "accuracy": int(correct[name].sum()) / len(images), "tokens_per_page": ntok,
                      "peak_mib": e2e_mib, "consumer_peak_mib": con_mib,
                      "correct": "".join("1" if c else "0" for c in correct[name].tolist())}
        if on_row is not None:
            on_row(name, rows)
    d = rows["dense"]
    for name, r in rows.items():
        r["e2e_speedup"] = r["e2e_ips"] / d["e2e_ips"]
        r["consumer_speedup"] = r["consumer_ips"] / d["consumer_ips"]
        r["accuracy_delta_pts"] = 100 * (r["accuracy"] - d["accuracy"])
        r["accuracy_delta_se_pts"] = 100 * paired_delta(correct[name], correct["dense"])[1]
    return rows


def pooled_correct(benches: Mapping[str, Mapping[str, dict]]) -> tuple[list[str], dict[str, Tensor]]:
    """Rows present in every bench of the same test pages (``benches``: label → the "rows" of a bench JSON),
    and row → (benches, pages) 0/1 tensor of each page's result under each bench; ValueError when the
    benches scored different numbers of pages."""
    runs = list(benches.values())
    n = {len(r["dense"]["correct"]) for r in runs}
    if len(n) != 1:
        raise ValueError(f"the benches scored different numbers of test pages {sorted(n)}: pool benches of the same pages")
    names = [k for k in runs[0] if all(k in r for r in runs)]
    return names, {k: torch.tensor([[c == "1" for c in r[k]["correct"]] for r in runs], dtype=torch.float)
                   for k in names}


def method_rows(depth: int, early_layer: int, evit_layers: tuple[int, ...], grid: tuple[int, int],
                tome_rows: Mapping[str, object] | None = None) -> dict[str, Method]:
    """The compared methods of a ``depth``-block encoder, name → (module, config) or None for dense: HiRED at
    20 % and 40 % (phase 2 at the second-to-last block) and with α = 0.25, HiRED-early selecting at
    ``early_layer`` (and, as a row, at HiRED's phase-2 block), EViT keeping 0.5 and 0.7 at ``evit_layers``,
    then ``tome_rows`` (name → :class:`ToMeConfig`)."""
    late = depth - 2
    m: dict[str, Method] = {
        "dense": None,
        "HiRED 20%": (hired, HiREDConfig(grid=grid, rate=0.2)),
        "HiRED 40%": (hired, HiREDConfig(grid=grid, rate=0.4)),
        "HiRED-early 20%": (hired, HiREDConfig(grid=grid, rate=0.2, select_layer=early_layer, early=True)),
        "HiRED 20% α=0.25": (hired, HiREDConfig(grid=grid, rate=0.2, alpha=0.25)),
        "HiRED-early 20% α=0.25": (hired, HiREDConfig(grid=grid, rate=0.2, alpha=0.25, select_layer=early_layer,
                                                       early=True)),
        f"HiRED-early 20% @block {late}": (hired, HiREDConfig(grid=grid, rate=0.2, select_layer=late, early=True)),
        "EViT keep 0.5": (evit, EViTConfig(layers=evit_layers, keep_rate=0.5)),
        "EViT keep 0.7": (evit, EViTConfig(layers=evit_layers, keep_rate=0.7)),
    }
    for name, cfg in (tome_rows or {}).items():
        m[name] = (tome, cfg)
    return m


def method_by_name(rows: Mapping[str, Method], name: str, evit_layers: tuple[int, ...],
                   option: str = "--reduced-from") -> Method:
    """(module, config) of the row ``name``: one of ``rows``, "ToMe r=<json int or list>" or "EViT keep <rate>"
    at ``evit_layers``; a ValueError naming ``option`` and the allowed names otherwise."""
    rows = dict(rows)
    try:
        if name.startswith("ToMe r=") and name not in rows:
            rows[name] = (tome, ToMeConfig(r=json.loads(name.split("=", 1)[1])))
        elif name.startswith("EViT keep ") and name not in rows:
            rows[name] = (evit, EViTConfig(layers=evit_layers, keep_rate=float(name.split()[-1])))
    except ValueError:
        pass
    if name not in rows or rows[name] is None:
        raise ValueError(f"{option} {name!r}: not a reduction method; use one of "
                         f"{[n for n, m in rows.items() if m is not None]}, 'ToMe r=<int or list>' or "
                         "'EViT keep <rate in (0, 1]>'")
    return rows[name]


def fit_training_steps(seconds: float, enc_s: float, con_s: float, enc_steps: int, con_steps: int,
                       floor: float = 0.2) -> tuple[int, int]:
    """Encoder and consumer step counts whose training (``enc_s`` / ``con_s`` seconds a step) fits ``seconds``:
    the given counts if they fit, else fewer encoder steps (not below ``floor`` of them), then fewer consumer
    steps (likewise). Never more than given (:func:`vitkit.bench.budget.fit_steps`)."""
    s = fit_steps(seconds, {"enc": enc_s, "con": con_s}, {"enc": enc_steps, "con": con_steps},
                  (("enc", floor), ("con", floor)))
    return s["enc"], s["con"]


def _crop_batch(pages: tuple[Tensor, Tensor], batch: int, size: int) -> Callable[[], Tensor]:
    """A function building the next batch of ink crops of ``pages`` on the CPU at each call."""
    from torch.utils.data import default_collate

    from ..frb.ink import InkCropDataset

    ds = InkCropDataset(pages[0][:50], pages[1][:50], size=size, crops_per_page=3 * batch, seed=0)
    starts = iter(range(0, len(ds), batch))

    def make() -> Tensor:
        r = next(starts)
        return default_collate([ds[i] for i in range(r, r + batch)])[0]

    return make


def training_plan(encoder: nn.Module, consumer_cfg, seconds_left: float, enc_steps: int, con_steps: int, *,
                  enc_batch: int, con_batch: int, bench_pages: float, pages: tuple[Tensor, Tensor] | None = None,
                  safety: float = 1.3) -> dict:
    """Encoder and consumer step counts that fit ``seconds_left``, from a few measured training steps of
    ``encoder`` (random crops of its input size, ``enc_batch``) and of a fresh consumer of ``consumer_cfg``
    (``con_batch`` token sets at the mean kept share 55 % of random dropping), both on the encoder's device.

    Never raises the given counts; lowers the encoder's first (not below 20 %), then the consumer's
    (:func:`vitkit.bench.budget.fit_steps`). An encoder step costs max(its compute, building a batch of ink
    crops of the grey ``pages`` (P, 1, H, W) + labels on the CPU) + copying it to the device. The reserve for the bench and the token sets is
    ``bench_pages`` page forwards end to end (a forward ≈ 1/3 of a step) + 60 s; everything × ``safety``."""
    dev = model_device(encoder)
    crop, b = encoder.cfg.img_size, enc_batch
    data_s, copy_s = batch_seconds(_crop_batch(pages, b, crop[0]), dev) if pages is not None else (0.0, 0.0)
    nc = encoder.cfg.num_classes
    gpu_s = train_step_seconds(encoder, lambda: (torch.randn(b, 3, *crop, device=dev), torch.randint(0, nc, (b,), device=dev)),
                               lambda m, xy: F.cross_entropy(m(xy[0]), xy[1]), dev, clip_norm=1.0)
    enc_s = max(gpu_s, data_s) + copy_s
    cons = TokenSetConsumer(consumer_cfg).to(dev)
    grid, P = consumer_cfg.grid, consumer_cfg.num_partitions
    cb, k = con_batch, max(1, int(0.55 * P * grid[0] * grid[1]))  # mean kept share of U[10%, 100%]

    def batch():
        return (torch.randn(cb, k, consumer_cfg.in_dim, device=dev), torch.randint(0, P, (cb, k), device=dev),
                torch.randint(0, grid[0], (cb, k, 2), device=dev),
                torch.randint(0, consumer_cfg.num_classes, (cb,), device=dev))

    con_s = train_step_seconds(cons, batch, lambda m, t: F.cross_entropy(m(t[0], t[1], t[2]), t[3]), dev, clip_norm=1.0)
    del cons
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    # one page end to end ≈ (P crops' forward) + (the consumer's forward on all tokens)
    page_s = P * gpu_s / (3 * b) + con_s / (3 * cb) / 0.55
    reserve = 60.0 + page_s * bench_pages
    e, c = fit_training_steps(seconds_left / safety - reserve, enc_s, con_s, enc_steps, con_steps)
    return {"encoder_s_per_step": enc_s, "encoder_compute_s": gpu_s, "encoder_data_s": data_s,
            "encoder_copy_s": copy_s, "consumer_s_per_step": con_s, "reserve_s": safety * reserve,
            "seconds_left": seconds_left, "encoder_steps_asked": enc_steps, "consumer_steps_asked": con_steps,
            "encoder_steps": e, "consumer_steps": c, "estimated_s": safety * (e * enc_s + c * con_s + reserve)}


@torch.no_grad()
def kept_token_sets(model: nn.Module, page: Tensor, methods: Sequence[tuple[str, ModuleType | None, object]],
                    grid: tuple[int, int]) -> list[tuple[str, TokenSet, Tensor | None]]:
    """The token set each (name, module or None for dense, config) method keeps of one grey page (1, 1, H, W)
    split into a ``grid`` of sub-images plus the thumbnail, with ToMe's merge sources (P, prefix + gh·gw) or
    None: ``[(name, token set, source)]``; every method is removed again."""
    from ..frb.ink import to_model_input

    x = to_model_input(page)
    out = []
    for name, mod, cfg in methods:
        with applied(model, None if mod is None else (mod, cfg)) as m:
            ts = encode(m, None if mod is None else (mod, cfg), x, grid)
        out.append((name, ts, ts.state.extras.get("tome_source")))
    return out


def train_consumer_on_images(model: nn.Module, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor],
                             grid: tuple[int, int], cfg, *, steps: int, batch: int, lr: float, out_dir,
                             seed: int = 0, guided: float = 0.0, reduced: Sequence[Method] = (),
                             dtype: torch.dtype | None = None, progress: bool = False):
    """Train a token-set consumer of ``cfg`` (:class:`~vitkit.reduce.consumer.ConsumerConfig`) on the frozen
    dense token sets ``model`` gives for images (n, C, H, W) + labels ``train`` (validated on ``val``), with
    random token dropping (keep 10–100 %) as augmentation; ``guided``: the share of batches keeping
    attention-guided subsets (CLS attention at the second-to-last block); ``reduced``: methods whose token
    sets of the training images make half the batches (one method per batch). AdamW, warm-up 5 %, weight
    decay 0.05, label smoothing 0.1, checkpoints and logs under ``out_dir``. Returns (consumer, TrainResult)."""
    tok, part, pos, scores = dense_token_sets(model, train[0], grid, vision_tower(model).depth - 2, dtype=dtype)
    vtok = dense_token_sets(model, val[0], grid, vision_tower(model).depth - 2, dtype=dtype)[0]
    tcfg = TrainConfig(epochs=1000, max_steps=steps, batch_size=batch, lr=lr, warmup_steps=steps // 20,
                       weight_decay=0.05, label_smoothing=0.1, seed=seed, out_dir=str(out_dir), progress=progress,
                       eval_every=max(1, steps // 5), ckpt_every=max(1, steps // 3), log_every=max(1, steps // 30))
    sets = [reduced_token_sets(model, m, train[0], grid, dtype=dtype) for m in reduced] or None
    return train_consumer(tok, train[1], part, pos, cfg, tcfg, min_keep=0.1, val=(vtok, val[1]),
                          scores=scores if guided else None, guided_prob=guided, reduced=sets,
                          reduced_prob=0.5 if sets else 0.0)
