"""The README's picture of adapt=: a photo, the painting, and the photo in the painting learned for 3 and 15 minutes
(scales and shifts on the shipped multi-style network, ``adapt_style``); prints each run's steps and objectives.

    python scripts/readme_adapt_picture.py PAINTING PHOTO OUT.jpg
"""

import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from nst_lightning.inference import stylize
from nst_lightning.transfer.adapt import adapt_style

torch.set_num_threads(1)
painting = Path(sys.argv[1])
photo = Image.open(sys.argv[2]).convert("RGB")
out = Path(sys.argv[3])
h = 256
small = photo.resize((round(photo.width * h / photo.height), h), Image.Resampling.LANCZOS)
art = Image.open(painting).convert("RGB")
art = art.resize((round(art.width * h / art.height), h), Image.Resampling.LANCZOS)
cells = [small, art]
for minutes in (3, 15):
    t = time.perf_counter()
    loaded = adapt_style(painting, minutes)
    info = loaded.meta["adapted"]
    print(
        json.dumps(
            {
                "minutes": minutes,
                "steps": info["steps"],
                "seconds": round(info["seconds"]),
                "objectives": {k: v for k, v in info.items() if "objective" in k},
                "cached": info["cached"],
            }
        ),
        flush=True,
    )
    cells.append(stylize(small, loaded, style=loaded.net.style_names[-1]))
gap = 4
canvas = Image.new("RGB", (sum(c.width for c in cells) + gap * (len(cells) - 1), h), "white")
x = 0
for c in cells:
    canvas.paste(c, (x, 0))
    x += c.width + gap
canvas.save(out, quality=85)
