"""Train a VGG-19 feature decoder (zero-shot style transfer) on photos: a plain, resumable torch loop.

The decoder learns to invert the frozen VGG-19's ``relu{b}_1`` features of photos (Li et al. 2017):

    loss = mean((decode(f) - x)^2) + feature_weight * mean((vgg(decode(f)) - f)^2) / mean(f^2),  f = vgg(x)

No painting is ever seen: styles come in at inference through AdaIN / whitening-colouring of the features.
The loop is time-budgeted (cosine learning rate over the wall clock), checkpoints every ``--save-every``
seconds to ``--work`` and resumes from there, and finally writes the fp16 decoder that ships in
``nst_lightning/pretrained/zeroshot/`` with its training figures.

    nice -n 10 python scripts/train_decoder.py --level relu4_1 --minutes 60 --crop 128 --batch 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from nst_lightning.inference.zeroshot import DECODER_FORMAT, decoder_path
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", default="relu4_1")
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


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    state_file = args.work / f"{args.level}.state.pt"

    photos = load_photos(args.data, args.short_side) if not args.export_only else []
    num_photos = sum(1 for p in args.data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    vgg = VGG19Features([args.level])
    step, elapsed, history, images = 0, 0.0, [], 0
    state = torch.load(state_file, map_location="cpu", weights_only=False) if state_file.exists() else None
    if state is not None:
        input_scale = state.get("input_scale", 1.0)
    else:  # 1 / RMS of the level's features on a few photos: the decoder then starts near the image range
        with torch.no_grad():
            input_scale = vgg(random_batch(photos, 8, args.crop), [args.level])[args.level].pow(2).mean().rsqrt().item()
    decoder = VGGDecoder(args.level, input_scale=input_scale).to(args.device)
    vgg = vgg.to(args.device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=args.lr)
    if state is not None:
        decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        images = state.get("images", step * args.batch)
        random.setstate(state["py_random"])
        print(f"resumed at step {step} after {elapsed:.0f} s", flush=True)

    if not args.export_only:
        step, elapsed, history, images, running = train(args, photos, vgg, decoder, optimizer, state_file,
                                                        step, elapsed, history, images)  # fmt: skip
    else:
        running = history[-1] if history else None
    meta = {"level": args.level, "steps": step, "images_seen": images, "train_photos": num_photos, "crop": args.crop,
            "batch": args.batch, "train_seconds": round(elapsed), "threads": args.threads, "lr": args.lr,
            "feature_weight": args.feature_weight, "final_loss": running, "device": args.device}  # fmt: skip
    out = args.out or decoder_path(args.level)
    out.parent.mkdir(parents=True, exist_ok=True)
    half = {k: v.half().cpu() for k, v in decoder.state_dict().items()}
    shipped = {"format": DECODER_FORMAT, "level": args.level, "width": 1.0, "input_scale": input_scale}
    torch.save({**shipped, "state_dict": half, "meta": meta}, out)
    print(json.dumps({"wrote": str(out), **meta}), flush=True)


def save_state(path: Path, decoder, optimizer, step: int, elapsed: float, history: list, images: int) -> None:
    """Everything :func:`main` needs to resume (``--work/<level>.state.pt``)."""
    state = {"decoder": decoder.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "images": images}
    state["input_scale"] = decoder.input_scale
    state.update(elapsed=elapsed, history=history, py_random=random.getstate())
    torch.save(state, path)


def train(args, photos, vgg, decoder, optimizer, state_file, step, elapsed, history, images):
    """The time-budgeted loop; returns (step, elapsed seconds, history, images seen, smoothed losses)."""
    budget = args.minutes * 60
    start, last_save, running = time.perf_counter() - elapsed, time.perf_counter(), None
    while (elapsed := time.perf_counter() - start) < budget:
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = random_batch(photos, args.batch, args.crop).to(args.device)
        loss, parts = reconstruction_loss(decoder, vgg, batch, args.feature_weight)
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
