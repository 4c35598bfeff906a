"""nst_lightning: train and serve feed-forward neural style transfer networks."""

__version__ = "0.1.0"
