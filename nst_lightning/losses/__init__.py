"""Loss network and perceptual losses."""

from nst_lightning.losses.config import LossConfig
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.losses.vgg import LAYER_NAMES, VGG19Features

__all__ = ["LAYER_NAMES", "LossConfig", "PerceptualLoss", "VGG19Features"]
