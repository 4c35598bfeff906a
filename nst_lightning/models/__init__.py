"""Image transformation networks, built by name: ``create_model("johnson")``."""

from nst_lightning.models import johnson, timm_unet  # noqa: F401  (registers the networks)
from nst_lightning.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
