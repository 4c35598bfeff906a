"""Loss network and perceptual losses."""

from nst_lightning.losses.perceptual import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, PerceptualLoss
from nst_lightning.losses.vgg import LAYER_NAMES, VGG19Features

__all__ = ["DEFAULT_CONTENT_LAYERS", "DEFAULT_STYLE_LAYERS", "LAYER_NAMES", "PerceptualLoss", "VGG19Features"]
