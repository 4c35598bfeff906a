"""Train a VGG-19 feature decoder (zero-shot style transfer) on photos: a plain, resumable torch loop.

The decoder learns to invert the frozen VGG-19's ``relu{b}_1`` features of photos (Li et al. 2017):

    loss = mean((decode(f) - x)^2) + feature_weight * mean((vgg(decode(f)) - f)^2) / mean(f^2),  f = vgg(x)

No painting is ever seen: styles come in at inference through AdaIN / whitening-colouring of the features.

With ``--objective style`` the decoder is instead trained on the project's own objective (AdaIN's recipe, with
the whitening-colouring transform): photo features are given a training style's statistics, decoded, and the
decoded image is scored by the perceptual loss (``conf/loss/default.yaml`` with the ``custom`` preset's weights)
against the photo and that style's Grams. Training styles are the paintings of ``--styles`` (the presets; the
evaluation paintings are never among them) at two sizes in all six orders of their colour channels, plus
``--photo-styles`` training photos, so the decoder learns "make these statistics" rather than sixteen paintings.
The loop is time-budgeted (cosine learning rate over the wall clock), checkpoints every ``--save-every``
seconds to ``--work`` and resumes from there, and finally writes the fp16 decoder that ships in
``nst_lightning/pretrained/zeroshot/`` with its training figures.

    nice -n 10 python scripts/train_decoder.py --level relu4_1 --minutes 60 --crop 128 --batch 4
    nice -n 19 python scripts/train_decoder.py --objective style --level relu3_1 --crop 256 --batch 2 \
        --init nst_lightning/pretrained/zeroshot/relu3_1.pt --lr 1e-4 --minutes 150 --out relu3_1_style.pt
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from nst_lightning.cpu_features import has_fast_bf16
from nst_lightning.image import load_image
from nst_lightning.inference.zeroshot import (
    DECODER_FORMAT,
    FeatureStats,
    decoder_path,
    feature_stats,
    read_decoder,
    transform,
)
from nst_lightning.losses.functional import gram_matrix
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.losses.vgg import VGG19Features
from nst_lightning.models.decoder import VGGDecoder

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def load_photos(folder: Path, short_side: int) -> list[torch.Tensor]:
    """Every photo in ``folder`` resized to ``short_side`` on its shorter side, as 3×H×W uint8 tensors."""
    photos = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        img = Image.open(path).convert("RGB")
        scale = short_side / min(img.size)
        img = img.resize((max(short_side, round(img.width * scale)), max(short_side, round(img.height * scale))))
        photos.append(torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3))
    return [p.permute(2, 0, 1).contiguous() for p in photos]


def random_batch(photos: list[torch.Tensor], batch: int, crop: int) -> torch.Tensor:
    """B×3×crop×crop float batch of random crops (random horizontal flips) in [0, 1]."""
    out = []
    for photo in random.sample(photos, batch):
        _, h, w = photo.shape
        top, left = random.randint(0, h - crop), random.randint(0, w - crop)
        patch = photo[:, top : top + crop, left : left + crop]
        out.append(patch.flip(2) if random.random() < 0.5 else patch)
    return torch.stack(out).float() / 255


def reconstruction_loss(
    decoder: VGGDecoder, vgg: VGG19Features, images: torch.Tensor, feature_weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Pixel + relative feature reconstruction loss of B×3×H×W ``images`` through ``decoder``."""
    level = decoder.level
    with torch.no_grad():
        target = vgg(images, [level])[level]
    recon = decoder(target)
    pixel = F.mse_loss(recon, images)
    feature = F.mse_loss(vgg(recon, [level])[level], target) / target.pow(2).mean().clamp_min(1e-8)
    loss = pixel + feature_weight * feature
    return loss, {"pixel": pixel.item(), "feature": feature.item(), "loss": loss.item()}


class StyleBank:
    """Training styles for ``--objective style``: per style, its statistics at the decoder's level and its Grams.

    Built once per run from 1×3×H×W style images; the loss holds every style's Grams as a bank (S×C×C per
    layer), so a style is an index.
    """

    def __init__(self, images: list[torch.Tensor], level: str, loss: PerceptualLoss) -> None:
        self.stats: list[FeatureStats] = []
        grams = []
        with torch.no_grad():
            for image in images:
                feats = loss.vgg(image, [*loss.style_layers, level])
                self.stats.append(feature_stats(feats[level][0]))
                grams.append({n: gram_matrix(feats[n]) for n in loss.style_layers})
        loss.set_style_bank(grams)

    def __len__(self) -> int:
        return len(self.stats)


def style_images(styles: Path, photos: Path, photo_styles: int, seed: int) -> list[torch.Tensor]:
    """The training styles as 1×3×H×W images in [0, 1]: each painting in ``styles`` at 512 and 384 px on its long
    side in the six orders of its colour channels, then ``photo_styles`` training photos at 512 px."""
    out = []
    for path in sorted(p for p in styles.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        for size in (512, 384):
            image = load_image(path, size)
            out += [image[:, list(order)] for order in itertools.permutations(range(3))]
    names = sorted(p for p in photos.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    out += [load_image(p, 512) for p in random.Random(seed).sample(names, min(photo_styles, len(names)))]
    return out


def style_loss_step(
    decoder: VGGDecoder, loss: PerceptualLoss, bank: StyleBank, images: torch.Tensor, bf16: bool
) -> tuple[torch.Tensor, dict[str, float]]:
    """The perceptual objective of B×3×H×W photos decoded from their features with random bank styles."""
    level = decoder.level
    picks = [random.randrange(len(bank)) for _ in range(images.shape[0])]
    with torch.no_grad():
        feats = loss.vgg(images, [level, *loss.content_layers])
        moved = torch.cat([transform(feats[level][i : i + 1], "wct", bank.stats[k]) for i, k in enumerate(picks)])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = decoder(moved.float())
        parts = {"content": 0.0, "style": 0.0}
        total = out.new_zeros((), dtype=torch.float32)
        for i, k in enumerate(picks):
            targets = {n: feats[n][i : i + 1] for n in loss.content_layers}
            terms = loss(out[i : i + 1], content_targets=targets, style=k)
            total = total + terms["objective"] / len(picks)
            for name in parts:
                parts[name] += terms[name].item() / len(picks)
    return total, {**parts, "loss": total.item()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", default="relu4_1")
    parser.add_argument("--objective", choices=("reconstruction", "style"), default="reconstruction")
    parser.add_argument("--styles", type=Path, default=Path(os.environ.get("NST_DATA_DIR", "data")) / "styles")
    parser.add_argument("--photo-styles", type=int, default=64, help="training photos used as styles too")
    parser.add_argument("--init", type=Path, default=None, help="start from this decoder file (same level)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="style objective: bf16 autocast where the CPU has fast bf16 (auto)")  # fmt: skip
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("NST_DATA_DIR", "data")) / "train")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock training budget (resumes count)")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--short-side", type=int, default=256, help="photos are resized to this shorter side")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--feature-weight", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--save-every", type=float, default=120.0, help="seconds between resumable checkpoints")
    parser.add_argument("--work", type=Path, default=Path("outputs/decoder"))
    parser.add_argument("--out", type=Path, default=None, help="shipped fp16 file (default: the package's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export-only", action="store_true", help="write the shipped file from --work's state")
    return parser.parse_args()


def build_decoder(args: argparse.Namespace, photos: list[torch.Tensor], state: dict | None) -> VGGDecoder:
    """The decoder to train: from ``--init``'s file, else with ``input_scale`` = 1 / RMS of the level's features
    on a few photos (so it starts near the image range); the resumable state's weights are loaded later."""
    if args.init is not None:
        decoder = read_decoder(args.init).requires_grad_(True).train()
        if decoder.level != args.level:
            raise SystemExit(f"error: --init {args.init} is a {decoder.level} decoder, not {args.level}")
        return decoder
    if state is not None:
        return VGGDecoder(args.level, input_scale=state.get("input_scale", 1.0))
    vgg = VGG19Features([args.level])
    with torch.no_grad():
        rms = vgg(random_batch(photos, 8, args.crop), [args.level])[args.level].pow(2).mean().rsqrt().item()
    return VGGDecoder(args.level, input_scale=rms)


def step_function(args: argparse.Namespace, decoder: VGGDecoder):
    """``images -> (loss, parts)`` for the chosen objective (the style objective builds its style bank here)."""
    if args.objective == "reconstruction":
        vgg = VGG19Features([args.level]).to(args.device)
        return lambda images: reconstruction_loss(decoder, vgg, images, args.feature_weight)
    loss = PerceptualLoss().to(args.device)
    started = time.perf_counter()
    bank = StyleBank([i.to(args.device) for i in style_images(args.styles, args.data, args.photo_styles, args.seed)],
                     args.level, loss)  # fmt: skip
    print(json.dumps({"style_bank": len(bank), "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and args.device == "cpu" and has_fast_bf16())
    return lambda images: style_loss_step(decoder, loss, bank, images, bf16)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    state_file = args.work / f"{args.level}.state.pt"

    photos = load_photos(args.data, args.short_side) if not args.export_only else []
    num_photos = sum(1 for p in args.data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    step, elapsed, history, images = 0, 0.0, [], 0
    state = torch.load(state_file, map_location="cpu", weights_only=False) if state_file.exists() else None
    decoder = build_decoder(args, photos, state).to(args.device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=args.lr)
    if state is not None:
        decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        images = state.get("images", step * args.batch)
        random.setstate(state["py_random"])
        print(f"resumed at step {step} after {elapsed:.0f} s", flush=True)

    running = history[-1] if history else None
    if not args.export_only:
        step_fn = step_function(args, decoder)
        step, elapsed, history, images, running = train(args, photos, step_fn, decoder, optimizer, state_file,
                                                        step, elapsed, history, images)  # fmt: skip
    meta = {"level": args.level, "objective": args.objective, "steps": step, "images_seen": images,
            "train_photos": num_photos, "crop": args.crop, "batch": args.batch, "train_seconds": round(elapsed),
            "threads": args.threads, "lr": args.lr, "feature_weight": args.feature_weight, "final_loss": running,
            "device": args.device, "init": str(args.init) if args.init else None}  # fmt: skip
    if args.init is not None:
        meta["init_meta"] = getattr(read_decoder(args.init), "meta", {})
    out = args.out or decoder_path(args.level)
    out.parent.mkdir(parents=True, exist_ok=True)
    half = {k: v.half().cpu() for k, v in decoder.state_dict().items()}
    shipped = {"format": DECODER_FORMAT, "level": args.level, "width": 1.0, "input_scale": decoder.input_scale}
    torch.save({**shipped, "state_dict": half, "meta": meta}, out)
    print(json.dumps({"wrote": str(out), **meta}), flush=True)


def save_state(path: Path, decoder, optimizer, step: int, elapsed: float, history: list, images: int) -> None:
    """Everything :func:`main` needs to resume (``--work/<level>.state.pt``)."""
    state = {"decoder": decoder.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "images": images}
    state["input_scale"] = decoder.input_scale
    state.update(elapsed=elapsed, history=history, py_random=random.getstate())
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(args, photos, step_fn, decoder, optimizer, state_file, step, elapsed, history, images):
    """The time-budgeted loop; returns (step, elapsed seconds, history, images seen, smoothed losses)."""
    budget = args.minutes * 60
    start, last_save, running = time.perf_counter() - elapsed, time.perf_counter(), None
    while (elapsed := time.perf_counter() - start) < budget:
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = random_batch(photos, args.batch, args.crop).to(args.device)
        loss, parts = step_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step, images = step + 1, images + args.batch
        running = parts if running is None else {k: 0.95 * running[k] + 0.05 * v for k, v in parts.items()}
        if step % 20 == 0:
            history.append({"step": step, "elapsed": round(elapsed, 1), "lr": lr, **running})
            print(json.dumps(history[-1]), flush=True)
        if time.perf_counter() - last_save > args.save_every:
            save_state(state_file, decoder, optimizer, step, elapsed, history, images)
            last_save = time.perf_counter()
    save_state(state_file, decoder, optimizer, step, elapsed, history, images)
    return step, elapsed, history, images, running


if __name__ == "__main__":
    main()
