"""vitkit.bench: the interleaving order, medians, the budget arithmetic on a fake clock, the machine
description and the page pool's chunks (no timing is asserted)."""

from __future__ import annotations

import itertools

import pytest
import torch

from vitkit.bench import budget, machine, pages, probe, tables, timing


class FakeClock:
    """Advances by the given steps, one per call."""

    def __init__(self, steps):
        self.t, self.steps = 0.0, itertools.cycle(steps)

    def __call__(self) -> float:
        now = self.t
        self.t += next(self.steps)
        return now


def test_round_orders_rotate_who_goes_first():
    assert timing.round_orders(["a", "b", "c"], 4) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                       ["a", "b", "c"]]
    assert timing.round_orders(["a", "b"], 3, rotate=False) == [["a", "b"]] * 3


def test_interleaved_runs_warmup_then_rotated_rounds_and_times_each_call():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in ("a", "b", "c")}
    times = timing.interleaved(fns, repeats=2, warmup=1, clock=FakeClock([1.0]))
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a"]
    assert times == {"a": [1.0, 1.0], "b": [1.0, 1.0], "c": [1.0, 1.0]}  # each call: two clock reads, 1 s apart
    with pytest.raises(ValueError, match="repeats"):
        timing.interleaved(fns, repeats=0)


def test_timed_reads_the_clock_around_the_call():
    seen = []
    clock = FakeClock([0.5, 2.0])
    assert timing.timed(lambda: seen.append(1), clock=clock) == 0.5 and seen == [1]


def test_median_and_spread():
    assert timing.median([3.0, 1.0, 2.0]) == 2.0 and timing.median([1.0, 2.0, 3.0, 10.0]) == 2.5
    assert timing.spread([1.0] * 9 + [100.0]) == 0.0  # the top 10 % is left out
    assert timing.spread([1.0, 2.0, 3.0]) == pytest.approx(1.0)


def test_precision_contexts():
    with timing.precision("cpu", torch.bfloat16):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with timing.precision("cpu", None):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="dtype"):
        timing.precision("cpu", torch.int8)
    with timing.fp32_precision(True):  # a no-op without CUDA, restored with it
        pass


def test_peak_memory_sees_a_large_allocation():
    assert timing.peak_mib(lambda: torch.empty(4 * 2**20, dtype=torch.uint8).fill_(1)) >= 3.9
    assert timing.rss_bytes() > 0 and timing.peak_rss_bytes()[0] >= timing.rss_bytes() // 2


def test_budget_on_a_fake_clock():
    clock = FakeClock([10.0])  # start at 0, then 10, 20, …
    b = budget.Budget(100, clock=clock)
    assert b.elapsed() == 10.0 and b.left() == 80.0  # the clock read 20
    assert b.allows(60.0) and not b.allows(71.0)  # 70 s left at the read of 30
    assert budget.Budget(None, clock=clock).left() == float("inf")
    with pytest.raises(ValueError, match="> 0"):
        budget.Budget(0)


def test_fit_steps_lowers_in_order_to_floors_and_never_raises():
    costs, asked = {"train": 0.05, "synth": 0.1}, {"train": 3000, "synth": 1000}
    order = (("train", 0.5), ("synth", 0.5), ("train", 0.25), ("synth", 0.2))
    assert budget.fit_steps(1000, costs, asked, order) == asked
    assert budget.fit_steps(200, costs, asked, order) == {"train": 2000, "synth": 1000}
    assert budget.fit_steps(90, costs, asked, order) == {"train": 800, "synth": 500}
    assert budget.fit_steps(1, costs, asked, order) == {"train": 750, "synth": 200}
    assert budget.fit_steps(1, {"train": 0.0, "synth": 0.1}, asked, order)["train"] == 3000  # free: kept


def test_train_step_seconds_and_batch_seconds_run_and_leave_eval_mode():
    model = torch.nn.Linear(4, 3)
    s = budget.train_step_seconds(model, lambda: (torch.randn(2, 4), torch.tensor([0, 1])),
                                  lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]), "cpu",
                                  warmup=1, steps=2, clip_norm=1.0)
    assert s >= 0 and not model.training
    make, copy = budget.batch_seconds(lambda: torch.zeros(3), "cpu")
    assert make >= 0 and copy >= 0 and budget.batch_seconds(lambda: torch.zeros(3))[1] == 0.0


def test_machine_description_has_every_key_and_a_line():
    info = machine.describe("cpu", threads=3, preset="tiny")
    assert set(machine.KEYS) <= set(info) and info["threads"] == 3 and info["preset"] == "tiny"
    assert info["gpu"] is None and info["device"] == "cpu" and info["date"].endswith("UTC")
    text = machine.line(info, ["fp32"])
    assert text.startswith(f"CPU ({info['cpu']}, {info['cpu_count']} cores, 3 threads); torch ")
    assert "; fp32; " in text and text.endswith(f"load {info['load_avg']}")
    assert machine.device_text({"gpu": "H100, 80 GiB"}) == "H100, 80 GiB"


def _render(split: str, start: int, stop: int, scale: int):
    idx = torch.arange(start, stop)
    return idx[:, None].float() * scale + (split == "val"), idx


def test_page_chunks_cover_every_page_once():
    c = pages.chunks({"train": 10, "val": 3}, workers=2)
    assert c[0] == ("train", 0, 2) and all(b - a <= 2 for _, a, b in c)
    assert [i for s, a, b in c if s == "train" for i in range(a, b)] == list(range(10))
    assert [i for s, a, b in c if s == "val" for i in range(a, b)] == list(range(3))


def test_page_pool_in_process_concatenates_in_order():
    with pages.PagePool(1) as pool:
        out = pool.render(_render, {"train": 5, "val": 2}, 10)
    assert torch.equal(out["train"][1], torch.arange(5)) and out["val"][0][:, 0].tolist() == [1.0, 11.0]


def test_page_pool_workers_give_the_same_pages_as_one_process():
    with pages.PagePool(2) as pool:
        two = pool.render(_render, {"train": 9, "val": 4}, 10)
    with pages.PagePool(1) as pool:
        one = pool.render(_render, {"train": 9, "val": 4}, 10)
    assert all(torch.equal(two[k][i], one[k][i]) for k in one for i in (0, 1))


def test_text_table_and_bytes():
    assert tables.fmt_bytes(512) == "512 B" and tables.fmt_bytes(1536) == "1.5 KiB"
    assert tables.fmt_bytes(3 * 2**30) == "3.0 GiB"
    assert tables.text_table("T", ["a", "bb"], [["xyz", "1"]]).splitlines() == ["T", "a    bb", "---  --",
                                                                                  "xyz  1 "]


def test_rss_rise_reports_the_rise_and_passes_the_result_through():
    res = timing.rss_rise(lambda: torch.ones(8 * 2**20, dtype=torch.uint8))  # 8 MiB kept alive by the result
    assert set(res) == {"peak_delta", "kept_delta", "baseline_rss", "baseline_peak", "peak_source", "hwm_reset",
                        "result"}
    assert res["result"].numel() == 8 * 2**20 and res["peak_source"] in ("VmHWM", "ru_maxrss")


def test_run_probe_returns_the_last_json_line_and_raises_with_stderr(tmp_path):
    script = tmp_path / "child.py"
    script.write_text("import json, sys\nspec = json.loads(sys.argv[2])\nprint('noise')\n"
                      "if spec.get('fail'): sys.exit('broken ' + sys.argv[1])\nprint(json.dumps({'twice': 2 * spec['x']}))\n")
    assert probe.run_probe(str(script), "--probe", {"x": 21}) == {"twice": 42}
    with pytest.raises(probe.ProbeError, match="broken --probe"):
        probe.run_probe(str(script), "--probe", {"fail": True})
