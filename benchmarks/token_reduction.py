"""Token reduction end to end on high-resolution FRB pages: HiRED, HiRED-early, EViT, ToMe vs dense.

Stages (each cached under --out):
  encoder   train a small ViT crop classifier (96×96 crops, patch 12, width 64, 4 blocks) on ink crops
            of 288×288 FRB pages
  consumer  encode 192×192 pages densely (thumbnail + 2×2 sub-images of 96 px = 5 × 64 tokens), train
            the token-set consumer (4 blocks, width 64) on those frozen tokens with random token
            dropping (keep 10-100%) as augmentation; --guided P: a fraction P of the batches keeps
            attention-guided subsets instead (saved under --consumer NAME)
  bench     per method: consumer-side and end-to-end images/s (interleaved repeats, median), peak
            tensor memory, page accuracy on the test pages with consumer NAME; table + plot
  plot      accuracy vs throughput for the benches of both consumers → benchmarks/token_reduction.png
Run: OMP_NUM_THREADS=1 python benchmarks/token_reduction.py --stage all   (figures: benchmarks/RESULTS.md)"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

import vitkit
from vitkit.data.crops import to_model_input
from vitkit.data.frb_pages import PageConfig, page_split, page_tensors
from vitkit.demo import DemoConfig, train_crop_classifier
from vitkit.engine import TrainConfig
from vitkit.reduce import EViTConfig, HiREDConfig, ToMeConfig, encode_partitions, evit, hired, partition, tome
from vitkit.reduce import evaluate as E
from vitkit.reduce.consumer import ConsumerConfig, TokenSetConsumer, train_consumer
from vitkit.reduce.partitions import TokenSet

log = logging.getLogger("token_reduction")

ENC = DemoConfig(crop=96, patch=12, dim=64, depth=4, heads=4, steps=1500, batch_size=64, lr=2e-3, seed=0)
PAGES = PageConfig()  # the encoder's crops come from 288×288 pages
BENCH_PAGES = PageConfig(size=(192, 192), block_width=(0.45, 0.75))  # 2×2 sub-images of 96 px = native size
GRID = (2, 2)
N_TRAIN, N_VAL, N_TEST = 1500, 150, 600
CONSUMER = dict(dim=64, depth=4, heads=4)
CONSUMER_STEPS, CONSUMER_BATCH = 900, 16
MEM_BATCH = 32  # pages in the peak-memory forward


def pages(split: str, n: int, cfg: PageConfig = PAGES):
    return page_tensors(page_split(n, 0, split=split, cfg=cfg))


def bench_pages(out: Path, split: str, n: int):
    """High-resolution pages (cached as uint8) → model input (n, 3, 192, 192) in [-1, 1], labels."""
    path = out / f"pages_{split}.pt"
    d = torch.load(path, weights_only=True) if path.exists() else None
    if d is None or len(d["labels"]) != n:
        grey, labels = pages(split, n, BENCH_PAGES)
        d = {"grey": (grey * 255).round().to(torch.uint8), "labels": labels}
        torch.save(d, path)
    return to_model_input(d["grey"].float() / 255), d["labels"]


def stage_encoder(out: Path, progress: bool, steps: int = ENC.steps) -> None:
    from vitkit import save

    t = time.perf_counter()
    tr, trl = pages("train", N_TRAIN)
    va, val = pages("val", N_VAL)
    log.info("pages rendered in %.1f s", time.perf_counter() - t)
    cfg = replace(ENC, out_dir=str(out / "encoder"), progress=progress, steps=steps)
    model, result = train_crop_classifier(cfg, tr, trl, va, val)
    save(model, out / "encoder" / "model")
    hist = [h for h in result.history if "val_crop_accuracy" in h]
    (out / "encoder" / "summary.json").write_text(json.dumps({
        "config": asdict(cfg), "train_s": time.perf_counter() - t, "steps": result.steps,
        "val_crop_accuracy": hist[-1]["val_crop_accuracy"] if hist else None}, indent=2))



def load_encoder(out: Path):
    return vitkit.load(out / "encoder" / "model").eval()


@torch.no_grad()
def dense_token_sets(enc, images: torch.Tensor, batch: int = 32):
    """Dense token sets (n, P·T, C), their layout, and each token's CLS attention at HiRED's phase-2
    block (second-to-last), summed over heads (n, P·T)."""
    sets, scores = [], []
    layer = enc.depth - 2
    with enc.attention_readout([layer], "cls") as maps:
        for i in range(0, len(images), batch):
            sets.append(encode_partitions(enc, partition(images[i : i + batch], GRID, enc.cfg.img_size,
                                                         enc.patch_size)))
            a = maps[layer][:, :, enc.num_prefix_tokens :].sum(1)  # (b·P, T)
            scores.append(a.reshape(len(sets[-1].tokens), -1))
    return torch.cat([s.tokens for s in sets]), sets[0].partition[0], sets[0].pos[0], torch.cat(scores)


@torch.no_grad()
def reduced_token_sets(enc, method_name: str, images: torch.Tensor, batch: int = 64) -> TokenSet:
    """The token sets ``method_name`` (a row of :func:`methods`, or "ToMe r=<json>") gives for ``images``, all
    pages stacked."""
    tome_r = {method_name: json.loads(method_name.split("=", 1)[1])} if method_name.startswith("ToMe r=") else {}
    rows = methods(tome_r)
    if method_name not in rows or rows[method_name] is None:
        raise ValueError(f"--reduced-from {method_name!r}: not a reduction method; use one of "
                         f"{[n for n, m in rows.items() if m is not None]} or 'ToMe r=<int or list>'")
    method = rows[method_name]
    parts = []
    with E.applied(enc, method):
        for i in range(0, len(images), batch):
            parts.append(E.encode(enc, method, images[i : i + batch], GRID))
    return TokenSet(torch.cat([p.tokens for p in parts]), torch.cat([p.partition for p in parts]),
                    torch.cat([p.pos for p in parts]), parts[0].grid, parts[0].num_partitions)


def stage_consumer(out: Path, progress: bool, guided: float, name: str, steps: int = CONSUMER_STEPS,
                   reduced_from: str | None = None) -> None:
    t = time.perf_counter()
    enc = load_encoder(out)
    tr, trl = bench_pages(out, "train", N_TRAIN)
    va, val = bench_pages(out, "val", N_VAL)
    tok, part, pos, scores = dense_token_sets(enc, tr)
    vtok, _, _, _ = dense_token_sets(enc, va)
    log.info("dense token sets %s in %.1f s", tuple(tok.shape), time.perf_counter() - t)
    ccfg = ConsumerConfig(in_dim=enc.embed_dim, num_partitions=1 + GRID[0] * GRID[1], grid=enc.grid_size,
                          num_classes=15, **CONSUMER)
    tcfg = TrainConfig(epochs=1000, max_steps=steps, batch_size=CONSUMER_BATCH, lr=1e-3,
                       warmup_steps=steps // 20, weight_decay=0.05, label_smoothing=0.1,
                       out_dir=str(out / name), progress=progress, eval_every=steps // 5,
                       ckpt_every=steps // 3, log_every=max(1, steps // 30))
    reduced = reduced_token_sets(enc, reduced_from, tr) if reduced_from else None
    model, result = train_consumer(tok, trl, part, pos, ccfg, tcfg, min_keep=0.1, val=(vtok, val),
                                   scores=scores if guided else None, guided_prob=guided,
                                   reduced=reduced, reduced_prob=0.5 if reduced_from else 0.0)
    torch.save({"cfg": asdict(ccfg), "state": model.state_dict()}, out / name / "consumer.pt")
    hist = [h for h in result.history if "val_accuracy" in h]
    (out / name / "summary.json").write_text(json.dumps({
        "config": asdict(ccfg), "guided_prob": guided, "reduced_from": reduced_from, "steps": result.steps, "train_s": time.perf_counter() - t,
        "val_accuracy_dense": hist[-1]["val_accuracy"] if hist else None}, indent=2))


def load_consumer(out: Path, name: str = "consumer") -> TokenSetConsumer:
    d = torch.load(out / name / "consumer.pt", weights_only=True)
    m = TokenSetConsumer(ConsumerConfig(**d["cfg"]))
    m.load_state_dict(d["state"])
    return m.eval()


# ------------------------------------------------------------------------------------------ methods
def methods(tome_r: dict[str, object]) -> dict[str, tuple]:
    """name → (module, config) or None for dense. HiRED-early selects at block 1 of 4 (or 2: one block saved)."""
    m: dict[str, tuple] = {
        "dense": None,
        "HiRED 20%": (hired, HiREDConfig(grid=GRID, rate=0.2)),
        "HiRED 40%": (hired, HiREDConfig(grid=GRID, rate=0.4)),
        "HiRED-early 20%": (hired, HiREDConfig(grid=GRID, rate=0.2, select_layer=1, early=True)),
        "HiRED 20% α=0.25": (hired, HiREDConfig(grid=GRID, rate=0.2, alpha=0.25)),
        "HiRED-early 20% α=0.25": (hired, HiREDConfig(grid=GRID, rate=0.2, alpha=0.25, select_layer=1, early=True)),
        "HiRED-early 20% @block 2": (hired, HiREDConfig(grid=GRID, rate=0.2, select_layer=2, early=True)),
        "EViT keep 0.5": (evit, EViTConfig(layers=(1, 2), keep_rate=0.5)),
        "EViT keep 0.7": (evit, EViTConfig(layers=(1, 2), keep_rate=0.7)),
    }
    for name, r in tome_r.items():
        m[name] = (tome, ToMeConfig(r=r))
    return m


def accuracy(enc, cons, method, images, labels):
    return E.accuracy(enc, cons, method, images, labels, GRID)


def timings(enc, cons, meths: dict, images, repeats: int, batch: int) -> dict[str, dict]:
    return E.throughput(enc, cons, meths, images[:batch], GRID, repeats)


@torch.no_grad()
def peak_memory(enc, cons, method, images) -> tuple[float, float]:
    """Peak tensor memory (MiB) of one forward of ``images``: end to end, and the consumer alone on the
    method's token set (torch profiler allocation events, CPU)."""
    with E.applied(enc, method):
        e2e = E.peak_tensor_mib(lambda: cons.classify(E.encode(enc, method, images, GRID)))
        ts = E.encode(enc, method, images, GRID)
    return e2e, E.peak_tensor_mib(lambda: cons.classify(ts))


def stage_bench(out: Path, repeats: int, batch: int, consumer: str, n_test: int = N_TEST) -> dict:
    enc, cons = load_encoder(out), load_consumer(out, consumer)
    x, y = bench_pages(out, "test", n_test)
    # ToMe: measure candidate schedules, keep the one closest to HiRED-early 20% end to end
    cands = {"ToMe r=8": 8, "ToMe r=12": 12, "ToMe r=[24,14,8,4]": [24, 14, 8, 4],
             "ToMe r=[32,12,6,2]": [32, 12, 6, 2], "ToMe r=[32,16,8,4]": [32, 16, 8, 4]}
    probe = timings(enc, cons, {"HiRED-early 20%": methods({})["HiRED-early 20%"],
                                **{n: (tome, ToMeConfig(r=r)) for n, r in cands.items()}}, x, max(3, repeats // 2), batch)
    target = probe["HiRED-early 20%"]["e2e_ips"]
    best = min(cands, key=lambda n: abs(probe[n]["e2e_ips"] / target - 1))
    log.info("ToMe probe %s; HiRED-early 20%% %.1f img/s → %s", {n: round(probe[n]["e2e_ips"], 1) for n in cands},
             target, best)
    tome_r = {best: cands[best]}
    meths = methods(tome_r)
    tim = timings(enc, cons, meths, x, repeats, batch)
    rows = {}
    for name, m in meths.items():
        acc, ntok = accuracy(enc, cons, m, x, y)
        e2e_mib, con_mib = peak_memory(enc, cons, m, x[:MEM_BATCH])
        rows[name] = {**tim[name], "accuracy": acc, "tokens_per_page": ntok, "peak_mib": e2e_mib,
                      "consumer_peak_mib": con_mib}
        log.info("%s: %s", name, rows[name])
    d = rows["dense"]
    for r in rows.values():
        r["e2e_speedup"] = r["e2e_ips"] / d["e2e_ips"]
        r["consumer_speedup"] = r["consumer_ips"] / d["consumer_ips"]
        r["accuracy_delta_pts"] = 100 * (r["accuracy"] - d["accuracy"])
    result = {"consumer": consumer, "rows": rows, "tome_probe": probe, "tome_choice": best, "repeats": repeats, "batch": batch,
              "threads": torch.get_num_threads(), "test_pages": len(x)}
    (out / f"bench_{consumer}.json").write_text(json.dumps(result, indent=2))
    print_table(rows)
    plot({consumer: rows}, out / f"token_reduction_{consumer}.png")
    return result


def print_table(rows: dict) -> None:
    print("| method | tokens/page | consumer img/s | × dense | end-to-end img/s | × dense | peak MiB e2e / consumer "
          "| accuracy | Δ pts |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, r in rows.items():
        print(f"| {n} | {r['tokens_per_page']:.0f} | {r['consumer_ips']:.1f} | {r['consumer_speedup']:.2f} | "
              f"{r['e2e_ips']:.1f} | {r['e2e_speedup']:.2f} | {r['peak_mib']:.1f} / {r['consumer_peak_mib']:.1f} | {100 * r['accuracy']:.1f}% | "
              f"{r['accuracy_delta_pts']:+.1f} |")


def plot(results: dict[str, dict], path: Path) -> None:
    """Accuracy vs end-to-end throughput; one marker per consumer ({consumer name: rows})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = {}
    for k, rows in enumerate(results.values()):
        marker = "os^"[k % 3]
        for n, r in rows.items():
            c = colors.setdefault(n, f"C{len(colors) % 10}")
            ax.scatter(r["e2e_ips"], 100 * r["accuracy"], color=c, marker=marker,
                       label=n if k == 0 else None)
            if k == 0:
                ax.annotate(n, (r["e2e_ips"], 100 * r["accuracy"]), fontsize=7, xytext=(4, 2),
                            textcoords="offset points")
    ax.set_xlabel("end-to-end images/s (encoder + consumer, 1 CPU thread)")
    ax.set_ylabel("page accuracy (%)")
    ax.set_title("High-resolution FRB: accuracy vs throughput (" + "; ".join(
        f"{'os^'[k % 3]} = {c}" for k, c in enumerate(results)) + ")", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stage_plot(out: Path, names: list[str], path: Path) -> None:
    results = {n: json.loads((out / f"bench_{n}.json").read_text())["rows"] for n in names
               if (out / f"bench_{n}.json").exists()}
    plot(results, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="all", choices=["encoder", "consumer", "bench", "plot", "all"])
    ap.add_argument("--out", default="runs/token_reduction")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=8, help="pages per timed batch")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--guided", type=float, default=0.0,
                    help="consumer: fraction of batches with attention-guided subsets (0 = random dropping only)")
    ap.add_argument("--consumer", default="consumer", help="consumer folder name under --out")
    ap.add_argument("--encoder-steps", type=int, default=ENC.steps, help="encoder training steps (× 64 crops)")
    ap.add_argument("--consumer-steps", type=int, default=CONSUMER_STEPS, help="consumer training steps (× 16 pages)")
    ap.add_argument("--test-pages", type=int, default=N_TEST, help="test pages (1 page = 100/N accuracy points)")
    ap.add_argument("--reduced-from", default=None, metavar="METHOD",
                    help="consumer: half the batches are the token sets METHOD (a table row, e.g. 'HiRED-early 20%%') "
                         "gives for the training pages, so the consumer sees that method's features")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("vitkit.reduce").setLevel(logging.WARNING)  # apply/remove in every timed round
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("encoder", "all"):
        stage_encoder(out, args.progress, args.encoder_steps)
    if args.stage in ("consumer", "all"):
        stage_consumer(out, args.progress, args.guided, args.consumer, args.consumer_steps, args.reduced_from)
    if args.stage in ("bench", "all"):
        stage_bench(out, args.repeats, args.batch, args.consumer, args.test_pages)
    if args.stage == "plot":  # all consumers' benches in one figure, next to RESULTS.md
        stage_plot(out, ["consumer", "consumer_guided"], Path(__file__).with_name("token_reduction.png"))


if __name__ == "__main__":
    main()
