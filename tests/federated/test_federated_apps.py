"""Flower apps: aggregation is the mean (median for FedMedian), a 2-client 2-round run in-process, faults,
process clean-up, the CLI's --clip."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

flwr = pytest.importorskip("flwr")

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict  # noqa: E402

from vitkit.adapt.fedfonts import AttributeClipConfig  # noqa: E402
from vitkit.federated.apps import make_strategy  # noqa: E402
from vitkit.federated.grid import server_identity  # noqa: E402
from vitkit.federated.runner import ProcessGroup, run_inprocess, run_processes  # noqa: E402
from vitkit.federated.task import (  # noqa: E402
    BundleConfig,
    FedConfig,
    build_model,
    bundle_config,
    get_state,
    load_bundle,
    prepare_bundle,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_CLIP = AttributeClipConfig(crop=32, patch=8, dim=32, depth=2, heads=2, text_width=32, text_depth=1, text_heads=2,
                                embed_dim=16, steps=2, batch_size=8)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("fed") / "bundle"
    return str(prepare_bundle(BundleConfig(clients=2, pages_per_font=2, crops_per_page=4, test_crops=2, clip=TINY_CLIP,
                                           clip_pages_per_font=1, test_pages_per_font=2), d))


def _reply(arrays: dict, n: int) -> Message:
    msg = Message(RecordDict({"config": flwr.app.ConfigRecord({"server-round": 1})}), dst_node_id=1, message_type="train")
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": n})}), reply_to=msg)


@pytest.mark.parametrize("strategy", ["fedavg", "fedmedian"])
def test_aggregating_two_clients_is_the_mean_of_their_parameters(bundle, strategy):
    clip, data = load_bundle(bundle)
    cfg = FedConfig(bundle=bundle, strategy=strategy, clients=2)
    a = get_state(build_model(cfg, clip, data))
    b = {k: v + torch.randn_like(v) for k, v in a.items()}
    with server_identity():
        agg, _ = make_strategy(cfg).aggregate_train(1, [_reply(a, 10), _reply(b, 10)])
    got = agg.to_torch_state_dict()
    assert set(got) == set(a)  # the prompt generator's tensors and nothing else
    for k in a:
        torch.testing.assert_close(got[k], (a[k] + b[k]) / 2)


@pytest.mark.parametrize("strategy", ["fedavg", "fedmedian"])
def test_three_skewed_clients_tell_the_median_from_the_weighted_mean(bundle, strategy):
    clip, data = load_bundle(bundle)
    cfg = FedConfig(bundle=bundle, strategy=strategy, clients=3)
    a = get_state(build_model(cfg, clip, data))
    d = {k: torch.randn_like(v) for k, v in a.items()}
    # per element a < b < c or c < b < a: the median is b whatever the sign of d, the mean is pulled towards c
    b = {k: a[k] + d[k] for k in a}
    c = {k: a[k] + 10 * d[k] for k in a}
    n = (10, 20, 70)
    with server_identity():
        agg, _ = make_strategy(cfg).aggregate_train(1, [_reply(a, n[0]), _reply(b, n[1]), _reply(c, n[2])])
    got = agg.to_torch_state_dict()
    assert set(got) == set(a)
    for k in a:
        median = b[k]
        mean = (n[0] * a[k] + n[1] * b[k] + n[2] * c[k]) / sum(n)  # Flower weights by each reply's num-examples
        assert (median - mean).abs().min() > 0.5 * d[k].abs().min()  # the two answers differ everywhere
        torch.testing.assert_close(got[k], median if strategy == "fedmedian" else mean)


def test_two_clients_two_rounds_in_process(bundle, tmp_path):
    cfg = FedConfig(bundle=bundle, out=str(tmp_path), method="fedmvp", clients=2, rounds=2, local_steps=2, batch_size=4)
    res = run_inprocess(cfg)
    assert res["participation"] == {str(r): {"ok": 2, "failed": 0, "errors": []} for r in (1, 2)}
    assert len(res["round_seconds"]) == 2
    for k in ("local", "base", "new", "hm"):
        assert 0.0 <= res[k] <= 1.0
    assert json.loads((tmp_path / "result.json").read_text())["hm"] == res["hm"]


def test_faults_dead_and_poisoned_clients(bundle, tmp_path):
    dead = run_inprocess(FedConfig(bundle=bundle, out=str(tmp_path / "dead"), method="fedcoop", clients=2, rounds=3,
                                   local_steps=2, batch_size=4, kill_client=1, kill_round=2))
    ok = {r: v["ok"] for r, v in dead["participation"].items()}
    assert ok == {"1": 2, "2": 1, "3": 1}  # dies mid-round 2, stays dead; the run finishes
    assert "died during round 2" in dead["participation"]["2"]["errors"][0]
    assert dead["local"] == dead["local"]  # the surviving client still evaluates (not NaN)


def test_a_poisoned_client_returns_a_scaled_update(bundle, tmp_path):
    from flwr.app import ConfigRecord, Context

    from vitkit.federated.apps import CONFIG_KEY, client_app

    clip, data = load_bundle(bundle)
    base = FedConfig(bundle=bundle, out=str(tmp_path), method="fedcoop", clients=2, rounds=1, local_steps=2, batch_size=4)
    init = get_state(build_model(base, clip, data))

    def train(cfg: FedConfig) -> dict:
        content = RecordDict({"arrays": ArrayRecord(init),
                              "config": ConfigRecord({"server-round": 1, CONFIG_KEY: json.dumps(cfg.__dict__)})})
        ctx = Context(run_id=1, node_id=2, node_config={"partition-id": 1, "num-partitions": 2}, state=RecordDict(),
                      run_config={})
        with server_identity():
            return client_app(Message(content, dst_node_id=2, message_type="train"), ctx).content["arrays"].to_torch_state_dict()

    honest = train(base)
    poisoned = train(FedConfig(**{**base.__dict__, "poison_client": 1, "poison_scale": -4.0}))
    assert not torch.equal(honest["ctx"], init["ctx"])
    torch.testing.assert_close(poisoned["ctx"], init["ctx"] - 4.0 * (honest["ctx"] - init["ctx"]))


def _still_running(pid: int) -> bool:
    r = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return r.stdout.strip()[:1] not in ("", "Z")


def test_process_group_ends_started_processes_and_their_orphans(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}
    group = ProcessGroup(tmp_path, env)
    # a parent that starts a child in a new session (as Flower's SuperLink starts its SuperExec), then sleeps
    code = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); "
            "time.sleep(120)")
    p = group.start("parent", [sys.executable, "-c", code])
    for _ in range(50):
        group.watch()
        if len(group.known) >= 2:
            break
        time.sleep(0.1)
    assert len(group.known) == 2
    owned = list(group.known)
    group.close(grace=5)
    assert group.alive() == []
    assert p.returncode is not None
    for pid in owned:
        assert not _still_running(pid), f"process {pid} still running"


def test_process_runner_cleans_up_after_a_failed_run(tmp_path):
    # the smoke of the process runner (≈ 15-30 s): SuperLink + 2 SuperNodes + flwr run, a ServerApp that fails
    cfg = FedConfig(bundle=str(tmp_path / "missing"), out=str(tmp_path / "run"), clients=2, rounds=1, round_timeout=30)
    with pytest.raises((RuntimeError, TimeoutError)):
        run_processes(cfg, timeout=120)
    pids = json.loads((tmp_path / "run" / "pids.json").read_text())
    owned = [v for k, v in pids.items() if isinstance(v, int)] + pids["descendants"]
    assert len(owned) >= 4
    for pid in owned:
        assert not _still_running(pid), f"process {pid} still running after the runner returned"


def _processes_with_env(key: str, value: str) -> list[int]:
    """Live processes whose environment has ``key=value`` (children inherit it, recorded or not)."""
    needle = f"{key}={value}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                env = (d / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if needle in env and _still_running(int(d.name)):
                found.append(int(d.name))
    return found


@pytest.mark.slow
def test_process_runner_cleans_up_after_a_successful_run(bundle, tmp_path, monkeypatch):
    homes = []  # the run's FLWR_HOME: every process Flower starts for the run inherits it
    mkdtemp = tempfile.mkdtemp

    def record(*args, **kwargs):
        homes.append(mkdtemp(*args, **kwargs))
        return homes[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", record)
    cfg = FedConfig(bundle=bundle, out=str(tmp_path / "run"), method="fedcoop", clients=2, rounds=1, local_steps=1,
                    batch_size=4, round_timeout=60)
    res = run_processes(cfg, timeout=300)
    assert res["participation"]["1"]["ok"] == 2  # the run did succeed
    pids = json.loads((tmp_path / "run" / "pids.json").read_text())
    owned = [v for k, v in pids.items() if isinstance(v, int)] + pids["descendants"]
    assert len(owned) >= 4  # SuperLink, 2 SuperNodes, flwr run (+ the SuperExec / app processes they spawned)
    for pid in owned:
        assert not _still_running(pid), f"process {pid} still running after a successful run"
    assert len(homes) == 1
    assert _processes_with_env("FLWR_HOME", homes[0]) == []  # nor one the runner never recorded


@pytest.mark.slow
def test_two_clients_as_real_processes(bundle, tmp_path):
    cfg = FedConfig(bundle=bundle, out=str(tmp_path), method="fedmvp", clients=2, rounds=2, local_steps=2, batch_size=4)
    res = run_processes(cfg, timeout=300)
    assert res["participation"]["2"]["ok"] == 2
    assert 0.0 <= res["hm"] <= 1.0


def test_cli_rejects_a_bad_mode_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from vitkit.cli import app

    r = CliRunner().invoke(app, ["federated", "run", "--mode", "cloud", "--bundle", str(tmp_path / "b")])
    assert r.exit_code == 2
    assert "--mode must be one of" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "b").exists()  # nothing was written


def test_cli_rejects_a_clip_that_cannot_be_loaded_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from vitkit.cli import app

    missing = tmp_path / "no-such-clip"
    r = CliRunner().invoke(app, ["federated", "run", "--mode", "inprocess", "--clip", str(missing),
                                 "--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert str(missing) in r.output and "cannot be loaded" in r.output
    assert not (tmp_path / "b").exists()  # failed before writing anything


def test_cli_rejects_a_model_that_is_not_a_clip(tmp_path):
    from typer.testing import CliRunner

    import vitkit
    from vitkit.cli import app

    vit = vitkit.save(vitkit.create_model("vit_test"), tmp_path / "vit")
    r = CliRunner().invoke(app, ["federated", "run", "--mode", "inprocess", "--clip", str(vit),
                                 "--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1
    assert str(vit) in r.output and "not a CLIP" in r.output
    assert not (tmp_path / "b").exists()


def test_cli_writes_the_bundle_with_the_given_clip(bundle, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import vitkit
    from vitkit.adapt.fedfonts import description_features
    from vitkit.cli import app
    from vitkit.federated import task

    mine = copy.deepcopy(load_bundle(bundle)[0])  # a tiny CLIP with a tokenizer, weights changed so it is ours
    with torch.no_grad():
        for p in mine.parameters():
            p.add_(0.01 * torch.randn_like(p))
    saved = vitkit.save(mine, tmp_path / "my-clip")
    real_prepare = task.prepare_bundle

    def small(cfg, out, clip=None):  # the CLI's bundle at test size: the CLIP and its source pass through
        return real_prepare(replace(cfg, pages_per_font=2, crops_per_page=2, test_crops=2, test_pages_per_font=2),
                            out, clip=clip)

    monkeypatch.setattr(task, "prepare_bundle", small)
    b = tmp_path / "b"
    args = ["federated", "run", "--mode", "inprocess", "--clients", "2", "--rounds", "1", "--local-steps", "1",
            "--bundle", str(b), "--out", str(tmp_path / "run")]
    r = CliRunner().invoke(app, [*args, "--clip", str(saved)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "result.json").exists()
    assert bundle_config(b).clip_source == str(saved.resolve())
    got = vitkit.load(b / "clip").state_dict()
    for k, v in mine.state_dict().items():
        torch.testing.assert_close(got[k], v)
    _, data = load_bundle(str(b))
    torch.testing.assert_close(data["text"], description_features(mine.eval(), data["fonts"]))  # features from it

    # the bundle now holds that CLIP: another --clip for it is refused in one line, nothing rewritten
    other = vitkit.save(load_bundle(bundle)[0], tmp_path / "other-clip")
    r = CliRunner().invoke(app, [*args, "--clip", str(other)])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "was written with the CLIP" in r.output and str(other) in r.output


def test_bundle_takes_the_benchmark_pages_of_every_size(tmp_path, monkeypatch):
    """The default test set is FRB easy + hard, whose pages are cut to their text (sizes differ): the bundle pads
    them to one canvas around their ink instead of failing to stack them."""
    from vitkit import frb
    from vitkit.federated import task

    easy, hard = frb.easy_split()[:2], frb.hard_split()[:2]
    assert len({s.image.size for s in easy + hard}) > 1
    monkeypatch.setattr(task.frb, "easy_split", lambda: easy)
    monkeypatch.setattr(task.frb, "hard_split", lambda: hard)
    out = prepare_bundle(BundleConfig(clients=2, pages_per_font=1, crops_per_page=2, test_crops=2, clip=TINY_CLIP,
                                      clip_pages_per_font=1, test_pages_per_font=0), tmp_path / "b")
    _, data = load_bundle(str(out))
    assert data["test"]["labels"].tolist() == [s.label for s in easy + hard]
    assert data["test"]["crops"].shape[0] == 2 * len(easy + hard)
    assert (data["test"]["crops"] < 128).any(dim=(1, 2, 3)).all()  # every crop holds ink (dark on white)


def test_cli_refuses_more_clients_than_the_bundle_holds(bundle, tmp_path):
    from typer.testing import CliRunner

    from vitkit.cli import app

    r = CliRunner().invoke(app, ["federated", "run", "--mode", "inprocess", "--clients", "5", "--bundle", bundle,
                                 "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1 and "holds data for 2 clients, not --clients 5" in r.output
    assert not (tmp_path / "run").exists()
