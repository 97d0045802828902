from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from vitkit.cli import app
from vitkit.reduce.consumer import ConsumerConfig, TokenSetConsumer

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def test_reduce_tome_and_hired_with_consumer(tmp_path):
    r = runner.invoke(app, ["reduce", "tome", "vit_test", "--pages", "3", "--r", "2", "--repeats", "1", "--batch", "2"])
    assert r.exit_code == 0, r.output
    assert "tome" in r.output and "dense" in r.output and "--consumer" in r.output
    cfg = ConsumerConfig(in_dim=64, dim=16, depth=1, heads=2, num_classes=15, num_partitions=5, grid=(4, 4))
    torch.save({"cfg": {**cfg.__dict__, "grid": list(cfg.grid)}, "state": TokenSetConsumer(cfg).state_dict()},
               tmp_path / "c.pt")
    r = runner.invoke(app, ["reduce", "hired", "vit_test", "--pages", "3", "--rate", "0.4", "--select-layer", "0",
                            "--consumer", str(tmp_path / "c.pt"), "--repeats", "1", "--batch", "2"])
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and "%" in r.output


@pytest.mark.parametrize(("args", "message"), [
    (["foo", "vit_test"], "METHOD must be one of"),
    (["hired", "vit_test", "--rate", "1.5"], "rate=1.5 is outside (0, 1]"),
    (["evit", "vit_test", "--layers", "7"], "layers contains 7"),
    (["tome", "vit_test", "--r", "9"], "r=9 at block 0"),
    (["hired", "vit_test", "--grid", "2by2"], "ROWSxCOLS"),
    (["hired", "vit_test", "--consumer", "missing.pt"], "does not exist"),
])
def test_reduce_errors(args, message):
    r = runner.invoke(app, ["reduce", *args, "--pages", "1", "--repeats", "1"])
    assert r.exit_code == 2
    assert message in " ".join(r.output.split())
