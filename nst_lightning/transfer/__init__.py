"""Network transfer: weight initialisation from a trained model, frozen stages, knowledge distillation.

Torch only (no Lightning, no Hydra): the LightningModule and the training CLI call these functions.
"""

from nst_lightning.transfer.add_style import (
    load_for_styles,
    load_start,
    load_with_new_styles,
    source_styles,
    train_only_styles,
)
from nst_lightning.transfer.batchnorm import reestimate_batchnorm
from nst_lightning.transfer.distill import Teacher, distill_terms
from nst_lightning.transfer.freeze import freeze, keep_frozen_norms_in_eval, parse_freeze_spec, stage_names
from nst_lightning.transfer.init import describe_arch, load_init_weights

__all__ = [
    "Teacher",
    "describe_arch",
    "distill_terms",
    "freeze",
    "keep_frozen_norms_in_eval",
    "load_for_styles",
    "load_init_weights",
    "load_start",
    "load_with_new_styles",
    "parse_freeze_spec",
    "reestimate_batchnorm",
    "source_styles",
    "stage_names",
    "train_only_styles",
]
