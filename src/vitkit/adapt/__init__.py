"""Adaptation: LoRA (:mod:`.lora`), visual and text prompts (:mod:`.prompts`: VPT, CoOp),
open-set prompt tuning (:mod:`.mtuning`: M-Tuning) and FedMVP's prompt generator
(:mod:`.promptformer`, with the font attribute data in :mod:`.fedfonts`)."""
