"""Adaptation: LoRA (:mod:`.lora`), visual and text prompts (:mod:`.prompts`: VPT, CoOp) and
open-set prompt tuning (:mod:`.mtuning`: M-Tuning)."""
