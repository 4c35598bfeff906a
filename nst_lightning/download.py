"""Downloads with a progress bar, HTTP range resume and checksum verification (urllib, no extra client)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from nst_lightning.errors import NSTError
from nst_lightning.image import file_digest

CHUNK = 1 << 20


def download(
    url: str,
    dest: str | Path,
    checksum: str | None = None,
    algorithm: str = "sha256",
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` file, then verify the checksum.

    An existing ``dest`` whose checksum matches is kept without touching the network.

    Raises:
        NSTError: the network is unreachable, the server refuses, or the checksum does not match.
    """
    dest = Path(dest)
    if dest.exists() and (checksum is None or file_digest(dest, algorithm) == checksum):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "nst_lightning"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = offset > 0 and response.status == 206
            if not resumed:
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with (
                open(part, "ab" if resumed else "wb") as out,
                tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, disable=not progress
                ) as bar,
            ):
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise NSTError(
            f"could not download {url} ({exc}). Check the network, or place the file by hand at {dest}. "
            f"A partial download (if any) is kept at {part} and will be resumed."
        ) from exc
    if checksum is not None:
        actual = file_digest(part, algorithm)
        if actual != checksum:
            part.unlink(missing_ok=True)
            raise NSTError(f"checksum mismatch for {url}: expected {algorithm} {checksum}, got {actual}")
    shutil.move(part, dest)
    return dest
