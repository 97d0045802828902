"""One-off check: vitkit's Grad-CAM against pytorch-grad-cam (PyPI ``grad-cam``) on tiny ViT, DeiT and
DINOv2-with-registers models. Not part of the suite: ``grad-cam`` needs torchvision, and no torchvision
wheel loads with the project's torch (torchvision 0.28.0: "operator torchvision::nms does not exist";
0.29 requires torch ≥ 2.14). Its Grad-CAM path never calls torchvision, so this check runs it in a
throwaway venv with a stub package standing in for torchvision:

    python -m venv /tmp/gcvenv   # plus a .pth line pointing at the project venv's site-packages
    /tmp/gcvenv/bin/pip install --no-deps grad-cam==1.5.7 ttach opencv-python-headless
    # /tmp/gcstub/torchvision/: __init__.py, ops.py, transforms/__init__.py (Compose, Normalize, ToTensor
    # as empty classes), transforms/functional.py (resize) — names only
    PYTHONPATH=src:/tmp/gcstub /tmp/gcvenv/bin/python benchmarks/explain_gradcam_reference.py

pytorch-grad-cam min-max scales each map, resizes it to the input (cv2) and scales again; the same two
steps are applied to vitkit's raw map before comparing.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from vitkit.explain import explain
from vitkit.models.vit import VisionTransformer, ViTConfig

VARIANTS = {"vit": {}, "deit": dict(dist_token=True),
            "dinov2_reg": dict(num_reg_tokens=4, layer_scale=True, layer_scale_init=1.0)}


def main() -> None:
    torch.manual_seed(0)
    for kind, kw in VARIANTS.items():
        m = VisionTransformer(ViTConfig(img_size=64, patch_size=8, embed_dim=64, depth=3, num_heads=4, num_classes=7,
                                        **kw)).eval()

        def reshape(t, npre=m.num_prefix_tokens):  # pytorch-grad-cam's ViT recipe, every prefix token dropped
            return t[:, npre:].reshape(t.shape[0], 8, 8, t.shape[-1]).permute(0, 3, 1, 2)

        x = torch.randn(3, 3, 64, 64)
        with GradCAM(model=m, target_layers=[m.blocks[-1].norm1], reshape_transform=reshape) as cam:
            theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(4)] * 3)
            raw = np.maximum(cam.get_cam_image(x, None, None, cam.activations_and_grads.activations[0],
                                               cam.activations_and_grads.gradients[0].numpy()), 0)
        ours = explain(m, x, "gradcam", target=4).maps.numpy()
        scaled = scale_cam_image(np.maximum(scale_cam_image(ours, (64, 64)), 0))
        print(f"{kind:>10}: raw 8×8 max |Δ| {np.abs(raw - ours).max():.2e}   "
              f"scaled 64×64 max |Δ| {np.abs(scaled - theirs).max():.2e}")


if __name__ == "__main__":
    main()
