"""Flower ClientApp and ServerApp for federated prompt learning (FedMVP, FedCoOp, local-only prompts).

Only the prompt generator's tensors (FedMVP) or the CoOp context (FedCoOp) travel, as a Flower
``ArrayRecord`` keyed by parameter name; the frozen CLIP and the data stay on each site (read from the run's
bundle, :mod:`vitkit.federated.task`). The run's :class:`~vitkit.federated.task.FedConfig` travels in every
message's ``ConfigRecord`` (key ``run-config``, JSON), so the same apps run unchanged in Flower's simulation
engine, in vitkit's in-process grid and as SuperLink/SuperNode processes.

Strategies are Flower's own (FedAvg, FedMedian, FedTrimmedAvg, Krum), each wrapped only to count the
replies and failures of every round. Faults are injected on the client side, where a real fault happens:

* dropout: in every round each client fails with probability ``dropout`` (seeded by round and client)
  before training; the round aggregates the rest;
* a killed client: in simulation it raises half-way through its local steps in round ``kill_round`` and
  fails every message after that; with real processes the runner SIGKILLs its SuperNode while it trains
  (the client leaves a marker file when it starts training);
* a poisoned client returns ``global + poison_scale · (local − global)`` (scaled, or sign-flipped when the
  scale is negative).

``local`` keeps each client's own generator in the node's ``Context.state`` and never uses the aggregate,
so it runs in the same harness; its base/new accuracy comes from the clients' final evaluation, whereas the
shared models of FedMVP/FedCoOp are evaluated on the server (``evaluate_fn``) after the last round.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum

from .task import (
    FedConfig,
    build_model,
    client_view,
    get_state,
    harmonic_mean,
    load_bundle,
    local_train,
    page_accuracy,
    set_state,
)

log = logging.getLogger(__name__)

CONFIG_KEY = "run-config"
STRATEGY_CLASSES = {"fedavg": FedAvg, "fedmedian": FedMedian, "fedtrimmedavg": FedTrimmedAvg, "krum": Krum}


class ClientFault(RuntimeError):
    """A fault injected on purpose (dropout, death)."""


def _config(msg: Message) -> FedConfig:
    return FedConfig(**json.loads(str(msg.content["config"][CONFIG_KEY])))


def _to_state(arrays: ArrayRecord) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in arrays.to_torch_state_dict().items()}


def _check_faults(cfg: FedConfig, pid: int, server_round: int, training: bool) -> int | None:
    """Raise for a dead or dropped client; → the step after which a dying client dies (None = it lives)."""
    dead_from = cfg.kill_round if pid == cfg.kill_client and not cfg.processes else None
    if dead_from is not None and server_round > dead_from:
        raise ClientFault(f"client {pid} is dead (killed in round {dead_from})")
    if dead_from is not None and server_round == dead_from and not training:
        raise ClientFault(f"client {pid} is dead (killed in round {dead_from})")
    if training and cfg.dropout > 0:
        rng = random.Random(f"{cfg.seed}-{server_round}-{pid}")
        if rng.random() < cfg.dropout:
            raise ClientFault(f"client {pid} dropped out of round {server_round}")
    if dead_from is not None and server_round == dead_from:
        return max(1, cfg.local_steps // 2)
    return None


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = _config(msg)
    pid = int(context.node_config["partition-id"])
    server_round = int(msg.content["config"]["server-round"])
    stop_after = _check_faults(cfg, pid, server_round, training=True)
    if cfg.processes:  # tells the process runner that this client is now training (it may kill it here)
        marker = Path(cfg.out) / "markers" / f"train-{pid}-{server_round}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(time.time()))
    torch.set_num_threads(1)
    clip, data = load_bundle(cfg.bundle)
    model = build_model(cfg, clip, data)
    global_state = _to_state(msg.content["arrays"])
    own = context.state.array_records.get("own") if cfg.method == "local" else None
    set_state(model, _to_state(own) if own is not None else global_state)
    flags = context.state.config_records.get("flags", ConfigRecord({"lora": False}))
    if cfg.method != "fedcoop" and bool(flags["lora"]):
        model.switch_to_lora()
    client = client_view(data, pid)
    t0 = time.perf_counter()
    losses = local_train(cfg, model, client, server_round, pid, stop_after=stop_after)
    state = get_state(model)
    if cfg.method != "fedcoop":
        context.state.config_records["flags"] = ConfigRecord({"lora": bool(model.lora_active)})
    if cfg.method == "local":
        context.state.array_records["own"] = ArrayRecord(state)
    if pid == cfg.poison_client:
        state = {k: global_state[k] + cfg.poison_scale * (v - global_state[k]) for k, v in state.items()}
    metrics = MetricRecord({"num-examples": len(client["labels"]), "train-loss": sum(losses) / len(losses),
                            "train-seconds": time.perf_counter() - t0, "lora": float(cfg.method != "fedcoop"
                                                                                   and model.lora_active)})
    return Message(RecordDict({"arrays": ArrayRecord(state), "metrics": metrics}), reply_to=msg)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg = _config(msg)
    pid = int(context.node_config["partition-id"])
    server_round = int(msg.content["config"]["server-round"])
    _check_faults(cfg, pid, server_round, training=False)
    final = server_round == cfg.rounds
    metrics = {"num-examples": 1}
    if final:
        torch.set_num_threads(1)
        clip, data = load_bundle(cfg.bundle)
        model = build_model(cfg, clip, data)
        own = context.state.array_records.get("own") if cfg.method == "local" else None
        set_state(model, _to_state(own if own is not None else msg.content["arrays"]))
        fonts = list(data["clients"][pid]["fonts"])
        metrics["local"] = page_accuracy(model, data, fonts)
        if cfg.method == "local":  # each site's own model: base/new measured where it lives
            metrics["base"] = page_accuracy(model, data, list(data["base"]))
            metrics["new"] = page_accuracy(model, data, list(data["new"]))
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


# ============================================================================================ server
def make_strategy(cfg: FedConfig):
    """Flower's strategy for ``cfg.strategy`` that also records each round's replies and failures."""
    base = STRATEGY_CLASSES[cfg.strategy]

    class Counting(base):  # type: ignore[misc, valid-type]
        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            failed = [m for m in replies if m.has_error()]
            self.participation[server_round] = {"ok": len(replies) - len(failed), "failed": len(failed),
                                                "errors": sorted({m.error.reason[:80] for m in failed})}
            return super().aggregate_train(server_round, replies)

    kw = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}
    if cfg.strategy == "fedtrimmedavg":
        kw["beta"] = cfg.trimmed_beta
    if cfg.strategy == "krum":
        kw["num_malicious_nodes"] = cfg.krum_malicious
    strategy = Counting(**kw)
    strategy.participation = {}
    return strategy


def wait_for_nodes(grid: Grid, n: int, timeout: float = 300.0) -> list[int]:
    """Block until ``n`` nodes are connected (the strategies then sample from whoever is still there)."""
    t0 = time.time()
    while len(ids := list(grid.get_node_ids())) < n:
        if time.time() - t0 > timeout:
            raise TimeoutError(f"only {len(ids)} of {n} SuperNodes connected after {timeout:.0f} s")
        time.sleep(0.5)
    return ids


def run_server(grid: Grid, cfg: FedConfig) -> dict:
    """The ServerApp's work: wait for the clients, run the strategy, evaluate, write ``cfg.out/result.json``."""
    torch.set_num_threads(1)
    wait_for_nodes(grid, cfg.clients)
    clip, data = load_bundle(cfg.bundle)
    model = build_model(cfg, clip, data)
    initial = ArrayRecord(get_state(model))
    strategy = make_strategy(cfg)
    stamps = [time.perf_counter()]
    final: dict = {}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round > 0:
            stamps.append(time.perf_counter())
        if server_round != cfg.rounds or cfg.method == "local":
            return None
        set_state(model, _to_state(arrays))
        final["base"] = page_accuracy(model, data, list(data["base"]))
        final["new"] = page_accuracy(model, data, list(data["new"]))
        return MetricRecord(dict(final))

    conf = ConfigRecord({CONFIG_KEY: json.dumps(cfg.__dict__)})
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=cfg.rounds, timeout=cfg.round_timeout,
                            train_config=conf, evaluate_config=ConfigRecord(dict(conf)), evaluate_fn=evaluate_fn)
    client_eval = result.evaluate_metrics_clientapp.get(cfg.rounds, {})
    out = {"method": cfg.method, "strategy": cfg.strategy, "clients": cfg.clients, "rounds": cfg.rounds,
           "seed": cfg.seed, "local": float(client_eval.get("local", float("nan")))}
    if cfg.method == "local":
        out["base"], out["new"] = float(client_eval.get("base", float("nan"))), float(client_eval.get("new", float("nan")))
    else:
        out.update(final)
    out["hm"] = harmonic_mean([out["local"], out["base"], out["new"]]) if all(
        out.get(k, float("nan")) == out.get(k, float("nan")) for k in ("local", "base", "new")) else float("nan")
    out["round_seconds"] = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    out["participation"] = {str(k): v for k, v in strategy.participation.items()}
    out["train_loss"] = {str(k): float(v["train-loss"]) for k, v in result.train_metrics_clientapp.items()
                         if "train-loss" in v}
    out["config"] = dict(cfg.__dict__)
    path = Path(cfg.out) / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    log.info("federated %s/%s: local %.3f base %.3f new %.3f hm %.3f", cfg.method, cfg.strategy, out["local"],
             out.get("base", float("nan")), out.get("new", float("nan")), out["hm"])
    return out


def make_server_app(config_path: str | None = None) -> ServerApp:
    """A ServerApp running :func:`run_server`; the config comes from ``config_path`` or, when None, from the
    run config key ``config`` (what ``flwr run`` passes to a SuperLink's ServerApp)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        path = config_path or str(context.run_config.get("config", ""))
        if not path:
            raise ValueError("no federated run config: set the run config key 'config' to a FedConfig JSON file")
        run_server(grid, FedConfig.load(path))

    return app


server_app = make_server_app()

__all__ = ["ClientFault", "client_app", "make_server_app", "make_strategy", "run_server", "server_app",
           "wait_for_nodes"]
