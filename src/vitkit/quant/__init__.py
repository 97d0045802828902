"""Low-bit quantization: PTQ wrappers (W8A8 … W2A2), calibration sources (real, noise, PSAQ-style,
SPDFQ), block reconstruction, real int8 execution and quantized checkpoints.

    from vitkit import quant
    info = quant.quantize(model, quant.QuantConfig(w_bits=4, a_bits=4), source="spdfq")
    quant.remove(model)                      # back to the float model
    quant.to_int8(model); quant.save_quantized(model, "runs/int8")   # real W8A8
    quant.linear_input_ranges(model, images)  # per-channel input ranges: are there outlier channels?
"""

from .calibrate import CALIBRATION_SOURCES, SOURCES, calibration_images, quantize, register_source
from .int8 import Int8Config, Int8Linear, to_int8
from .ptq import QuantConfig, QuantLinear, apply, calibrate, quant_disabled, reconstruct_blocks, remove
from .quantizers import ActQuantizer, Log2Quantizer, WeightQuantizer, parse_bits
from .serialize import load_quantized, save_quantized
from .stats import channel_spread, linear_input_ranges, spread_by_kind

__all__ = [
    "CALIBRATION_SOURCES",
    "SOURCES",
    "ActQuantizer",
    "Int8Config",
    "Int8Linear",
    "Log2Quantizer",
    "QuantConfig",
    "QuantLinear",
    "WeightQuantizer",
    "apply",
    "calibrate",
    "calibration_images",
    "channel_spread",
    "linear_input_ranges",
    "load_quantized",
    "parse_bits",
    "quant_disabled",
    "quantize",
    "reconstruct_blocks",
    "register_source",
    "remove",
    "save_quantized",
    "spread_by_kind",
    "to_int8",
]
