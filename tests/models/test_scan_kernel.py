"""The fused minGRU inference kernel: equal to the token-by-token recurrence in both directions, with states carried
between pieces, and to the torch path at model level; the switch and its errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from vitkit.models import scan_kernel
from vitkit.models.mingru import MinGRU, scan_sequential
from vitkit.models.visiongru import Block2DGRU, VisionGRU, VisionGRUConfig

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed (vitkit[fast])")


def reference(proj: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """scan_sequential in fp64 of proj (B, L, 2D) = [hidden | gate], in the original token order."""
    hidden, gate = proj.double().chunk(2, dim=-1)
    if reverse:
        return scan_sequential(gate.flip(1), hidden.flip(1)).flip(1)
    return scan_sequential(gate, hidden)


@needs_numba
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_scan_equals_the_recurrence_piece_by_piece(reverse):
    assert scan_kernel.available()  # numba is installed, so the kernel must have compiled here
    torch.manual_seed(0)
    proj = torch.randn(2, 301, 16) * 3  # gates and candidates on both sides of 0
    ref = reference(proj, reverse)
    with torch.no_grad():
        whole, last = scan_kernel.fused_scan(proj, reverse=reverse)
        starts = list(range(0, 301, 64))
        state, parts = None, {}
        for s in (reversed(starts) if reverse else starts):  # the reversed scan carries from the end
            parts[s], state = scan_kernel.fused_scan(proj[:, s : s + 64], state, reverse=reverse)
    pieces = torch.cat([parts[s] for s in starts], 1)
    assert whole.shape == (2, 301, 8) and whole.dtype == torch.float32
    assert torch.allclose(whole.double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(pieces, whole, rtol=1e-6, atol=1e-7)
    end = 0 if reverse else -1
    assert torch.allclose(last, whole[:, end]) and torch.allclose(state, whole[:, end])


@needs_numba
def test_fused_scan_saturated_gates_stay_finite_and_exact():
    proj = torch.tensor([[[-40.0, 40.0, 0.0, 30.0, -30.0, 0.0]] * 50])  # z ≈ 1, ≈ 0, 0.5; h̃ ≪ 0, ≫ 0, 0
    proj = proj + torch.linspace(-1, 1, 50)[None, :, None]
    out, _ = scan_kernel.fused_scan(proj)
    assert torch.isfinite(out).all()
    assert torch.allclose(out.double(), reference(proj), rtol=1e-6, atol=1e-7)


@needs_numba
def test_mingru_kernel_and_torch_paths_agree(monkeypatch):
    torch.manual_seed(1)
    gru = MinGRU(dim=6, expansion=2.0, block=4, gate_memory=16.0)
    x = torch.randn(1, 97, 6)
    with torch.no_grad():
        got = {}
        for backend in ("numba", "torch"):
            monkeypatch.setenv(scan_kernel.ENV, backend)
            assert scan_kernel.usable(x) == (backend == "numba")
            with torch.enable_grad():
                assert not scan_kernel.usable(x)  # training keeps the autograd scan
            fwd = gru.resume(x, None)
            rev = gru.resume(x, None, reverse=True)
            got[backend] = (fwd, rev)
        ref_fwd = gru(x)
        ref_rev = gru(x.flip(1)).flip(1)
    for (out, _state), ref in zip(got["numba"], (ref_fwd, ref_rev), strict=True):
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(got["numba"], got["torch"], strict=True):
        assert torch.allclose(a[0], b[0], rtol=1e-5, atol=1e-6) and torch.allclose(a[1], b[1], rtol=1e-5, atol=1e-6)


@needs_numba
@pytest.mark.parametrize("B", [1, 2])
def test_block_no_grad_path_with_the_kernel_equals_the_autograd_path(B, monkeypatch):
    """fp32 block: the kernel scans, the output projection accumulates in place (batch 1) or adds (batch 2)."""
    torch.manual_seed(2)
    blk = Block2DGRU(dim=8, expansion=2.0, mlp_ratio=4.0, norm_eps=1e-6, chunk=4, infer_piece=64,
                     gate_memory=32.0).eval()
    x = torch.randn(B, 9, 11, 8)
    ref = blk(x)  # autograd on: the whole-sequence torch scan
    monkeypatch.setenv(scan_kernel.ENV, "numba")
    with torch.no_grad():
        out = blk(x)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_switch_and_errors(monkeypatch):
    monkeypatch.setenv(scan_kernel.ENV, "torch")
    assert not scan_kernel.available() and not scan_kernel.usable(torch.zeros(1, 2, 4))
    monkeypatch.setenv(scan_kernel.ENV, "cuda")
    with pytest.raises(ValueError, match="VITKIT_SCAN_KERNEL='cuda': expected auto, torch or numba"):
        scan_kernel.available()
    monkeypatch.setenv(scan_kernel.ENV, "numba")
    monkeypatch.setattr(scan_kernel, "_numba_installed", lambda: False)
    with pytest.raises(RuntimeError, match=r"pip install 'vitkit\[fast\]'"):
        scan_kernel.available()
    monkeypatch.setenv(scan_kernel.ENV, "auto")
    assert not scan_kernel.available()  # no numba: the torch path, silently correct
    monkeypatch.setattr(scan_kernel, "_numba_installed", lambda: True)
    monkeypatch.setattr(scan_kernel, "_kernel", lambda: None)  # numba present but the compiler failed
    assert not scan_kernel.available()
    monkeypatch.setenv(scan_kernel.ENV, "numba")
    with pytest.raises(RuntimeError, match="did not compile"):
        scan_kernel.available()
    x = torch.zeros(1, 2, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="fused_scan needs numba"):
        scan_kernel.fused_scan(torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"\(B, L, 2D\) fp32 CPU tensor"):
        scan_kernel.fused_scan(x)
    with pytest.raises(ValueError, match=r"\(B, L, 2D\) fp32 CPU tensor"):
        scan_kernel.fused_scan(torch.zeros(1, 2, 3))


@pytest.mark.parametrize("B", [1, 2])
def test_bf16_autocast_inference_runs_on_the_torch_path(B):
    """Under CPU bf16 autocast the pieces mix dtypes: the kernel (fp32 only) and the in-place projection step
    aside, and the logits stay close to fp32's."""
    torch.manual_seed(3)
    model = VisionGRU(VisionGRUConfig(dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), num_classes=3, infer_piece=64)).eval()
    x = torch.randn(B, 3, 40, 36)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.shape == ref.shape and torch.allclose(low.float(), ref, atol=0.1, rtol=0.1)
