"""The style transfer service: FastAPI app, model layer, result cache, metrics and web page."""

from nst_lightning.serve.app import create_app
from nst_lightning.serve.settings import CacheSettings, ServeSettings

__all__ = ["CacheSettings", "ServeSettings", "create_app"]
