"""Train one network on many styles (conditional instance norm), or add a style to a trained one.

Each training batch mixes the styles: image i of step t takes trained style ``(t·B + i) mod N``, so every style
gets the same share of images and of steps. Each style is scored against its own Gram targets with its own
loss weights (its preset's ``content_weight``, ``style_weight``, ``tv_weight``); the layers and loss network
are shared. Validation runs every trained style on every validation image.
"""

from __future__ import annotations

from typing import Any

import torch

from nst_lightning import transfer
from nst_lightning.errors import NSTError
from nst_lightning.losses.config import TERM_WEIGHTS
from nst_lightning.losses.styles import set_style_bank_targets
from nst_lightning.training.module import StyleTransferModule


class MultiStyleModule(StyleTransferModule):
    """:class:`StyleTransferModule` for a network of several styles.

    Args:
        styles: the network's styles in order, each ``{name, image, size, content_weight, style_weight,
            tv_weight}`` (``image`` and ``size``: its Gram targets). Saved in the checkpoint's hyper-parameters.
        train_styles: indices of the styles to train (None: all). With fewer than all (adding a style), every
            other parameter of the network is frozen and only those styles' scales and shifts are trained; the
            network then starts from ``transfer.init_from``, whose styles are the first ones of ``styles``
            (see :func:`nst_lightning.transfer.load_with_new_styles`). Training every style, ``transfer.init_from``
            starts the whole network (:func:`nst_lightning.transfer.load_for_styles`).
        refine: with ``train_styles``, ``transfer.init_from`` already holds every style (by name): the whole
            network is loaded as it is (:func:`nst_lightning.transfer.load_for_styles`) and only those styles'
            scales and shifts go on training (retouching some styles of a trained network).
        balance: train on each style's objective divided by its own running mean (times their mean), so that
            every style pulls the shared weights alike whatever the scale of its loss; logged and validated
            objectives are the plain ones.
        **groups: as :class:`StyleTransferModule` (``model.kwargs`` gets ``num_styles``; the style group is
            replaced by ``styles``).
    """

    def __init__(
        self, styles: list[dict[str, Any]], train_styles: list[int] | None = None, balance: bool = True,
        refine: bool = False, **groups: Any,
    ) -> None:  # fmt: skip
        if not styles:
            raise NSTError("a multi-style network needs at least one style: styles=[NAME, ...]")
        names = [str(s["name"]) for s in styles]
        if len(set(names)) != len(names):
            raise NSTError(f"style names must differ, got {names}")
        missing = [f"{s['name']}.{k}" for s in styles for k in ("image", "size", *TERM_WEIGHTS) if k not in s]
        if missing:
            raise NSTError(f"each style needs image, size and its loss weights; missing {', '.join(missing)}")
        transfer_group = dict(groups.get("transfer") or {})
        if transfer_group.get("teacher"):
            raise NSTError("distillation (teacher=...) is not supported for multi-style networks")
        model = dict(groups.get("model") or {})
        model["kwargs"] = {**(model.get("kwargs") or {}), "num_styles": len(styles)}
        style = {**(groups.get("style") or {}), "name": "+".join(names), "image": None}
        super().__init__(**{**groups, "model": model, "style": style})
        self.styles = [dict(s) for s in styles]
        self.trained = list(range(len(styles))) if train_styles is None else [int(i) for i in train_styles]
        bad = [i for i in self.trained if not 0 <= i < len(styles)]
        if bad or not self.trained:
            raise NSTError(f"train_styles must be indices of the {len(styles)} styles, got {train_styles}")
        self.adding = len(self.trained) < len(styles) and not refine
        self.refine = bool(refine)
        self.balance = bool(balance)
        # Running mean of each trained style's objective (0: not seen yet); re-estimated after a resume.
        self.register_buffer("style_scale", torch.zeros(len(self.trained)), persistent=False)
        if len(self.trained) < len(styles) and not transfer_group.get("init_from"):
            raise NSTError("training only some styles needs the trained network to start from: init_from=...")
        self.save_hyperparameters(
            {**self.hparams, "styles": self.styles, "train_styles": train_styles, "balance": self.balance,
             "refine": self.refine}
        )  # fmt: skip
        if len(self.trained) < len(styles):
            transfer.train_only_styles(self.net, self.trained)

    @property
    def style_names(self) -> list[str]:
        return [str(s["name"]) for s in self.styles]

    def load_init_weights(self) -> None:
        """Adding styles: the source network's styles come first, the new ones start from their mean. Training
        every style: the source's body, and each style's scales and shifts from the source's style of that name
        (else their mean); see :func:`nst_lightning.transfer.load_for_styles`."""
        source = self.transfer_group.init_from
        if not source:
            return
        arch = transfer.describe_arch(self.model_group.name, self.model_group.kwargs)
        if self.adding:
            new = len(self.styles) - min(self.trained)
            self._set_provenance(transfer.load_with_new_styles(self.net, source, new, arch))
        else:
            self._set_provenance(transfer.load_for_styles(self.net, source, self.style_names, arch))

    def setup(self, stage: str) -> None:
        if not self.loss_fn.target_grams:
            trained = [self.styles[i] for i in self.trained]
            sources = [(s["image"], s["size"]) for s in trained]
            weights = [{k: s[k] for k in TERM_WEIGHTS} for s in trained]
            set_style_bank_targets(self.loss_fn, sources, weights, cache_dir=self.style_group.cache_dir)
        super().setup(stage)

    def _styles_of_batch(self, batch_size: int) -> torch.Tensor:
        """Position in ``self.trained`` of each image's style: round robin, continuing across steps."""
        start = self.global_step * batch_size
        return (torch.arange(batch_size) + start) % len(self.trained)

    def _shared_step(self, batch: torch.Tensor, prefix: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        b = batch.shape[0]
        if prefix == "train":
            slots = self._styles_of_batch(b).to(batch.device)
            style = torch.tensor(self.trained, device=batch.device)[slots]
            out = self.net(self._net_input(batch), style)
            groups = [(k, slots == k) for k in range(len(self.trained)) if bool((slots == k).any())]
            per_style = {k: self.loss_fn(out[mask], batch[mask], style=k) for k, mask in groups}
            shares = {k: float(mask.sum()) / b for k, mask in groups}
        else:  # every trained style on every validation image
            per_style = {}
            for k, index in enumerate(self.trained):
                out = self.net(batch, torch.full((b,), index, device=batch.device))
                per_style[k] = self.loss_fn(out, batch, style=k)
            shares = {k: 1.0 / len(self.trained) for k in per_style}
        names = next(iter(per_style.values()))
        terms = {name: sum(shares[k] * t[name] for k, t in per_style.items()) for name in names}
        if prefix == "train" and self.balance:
            terms["balanced"] = self._balanced(per_style, shares)
        on_step = prefix == "train"
        log = dict(on_step=on_step, on_epoch=not on_step, batch_size=b, sync_dist=not on_step)
        for name, value in terms.items():
            if name != "balanced":
                self.log(f"{prefix}/{name}", value.detach(), prog_bar=name == "objective", **log)
        for k, t in per_style.items():
            self.log(f"{prefix}/style/{self.style_names[self.trained[k]]}", t["objective"].detach(), **log)
        return terms, out

    def _stylize_smooth(self, images: torch.Tensor) -> torch.Tensor:
        """The smooth images each in a trained style, round robin continuing across steps."""
        b = images.shape[0]
        slots = (torch.arange(b) + self.global_step * b) % len(self.trained)
        return self.net(images, torch.tensor(self.trained)[slots].to(images.device))

    def _balanced(self, per_style: dict[int, dict[str, torch.Tensor]], shares: dict[int, float]) -> torch.Tensor:
        """Σ share_k · objective_k · (mean scale ÷ scale_k), the scales being running means (momentum 0.9) of
        each style's objective."""
        with torch.no_grad():
            for k, t in per_style.items():
                value = t["objective"].detach().float()
                seen = self.style_scale[k] > 0
                self.style_scale[k] = torch.where(seen, 0.9 * self.style_scale[k] + 0.1 * value, value)
            known = self.style_scale[self.style_scale > 0]
            mean = known.mean()
        return sum(shares[k] * t["objective"] * (mean / self.style_scale[k]) for k, t in per_style.items())

    def _training_objective(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return terms.get("balanced", terms["objective"])
