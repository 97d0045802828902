import torch
from PIL import Image
from typer.testing import CliRunner

from vitkit import quant
from vitkit.cli import app

runner = CliRunner()


def test_quantize_int8_with_noise(tmp_path, one_thread):
    out = tmp_path / "q8"
    r = runner.invoke(app, ["quantize", "vit_test", "--bits", "w8a8", "--calib", "noise", "--n", "4",
                            "--recon-steps", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "W8A8" in r.output and "real int8" in r.output
    m = quant.load_quantized(out)
    assert isinstance(m.blocks[0].attn.qkv, quant.Int8Linear)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_quantize_w4a4_real_images(tmp_path, one_thread):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy()).save(folder / f"{i}.png")
    out = tmp_path / "q4"
    r = runner.invoke(app, ["quantize", "vit_test", "--bits", "w4a4", "--calib", "real", "--images", str(folder),
                            "--n", "3", "--recon-steps", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = quant.load_quantized(out)
    assert m.applied["quant"].w_bits == 4 and isinstance(m.blocks[1].mlp.fc2, quant.QuantLinear)


def test_quantize_bad_arguments(tmp_path):
    for args, needle in ((["--bits", "w9a8"], "bits"), (["--bits", "w4a1"], "bits"), (["--calib", "imagenet"], "calib"),
                         (["--calib", "real"], "--images")):
        r = runner.invoke(app, ["quantize", "vit_test", "--out", str(tmp_path / "x"), *args])
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output, (args, r.output)
