"""The project's image manifest: public URLs (and sha256) of the style, content, training and eval images.

``manifest.tsv`` (next to this file) lists, per image, its path under the data folder, its source and a raw
download URL. Styles, content and eval images are byte-identical to their source, so their sha256 is
verified. The training photos in the prepared data folder were resized (shorter side 320 px), so the
originals fetched from their URLs are larger and are not checked against the listed hash.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from nst_lightning.download import download
from nst_lightning.errors import NSTError

log = logging.getLogger(__name__)
MANIFEST = Path(__file__).with_name("manifest.tsv")
RESIZED_PREFIXES = ("train/",)


@dataclass(frozen=True)
class Entry:
    relative_path: str
    sha256: str
    url: str

    @property
    def verifiable(self) -> bool:
        """True when the listed sha256 is that of the file at ``url`` (not of a resized copy)."""
        return not self.relative_path.startswith(RESIZED_PREFIXES)


def read_manifest(path: str | Path | None = None) -> list[Entry]:
    """All rows of a manifest TSV (columns ``relative_path``, ``sha256``, ``raw_url``); default: the shipped one."""
    with open(path or MANIFEST, newline="") as f:
        return [Entry(r["relative_path"], r["sha256"], r["raw_url"]) for r in csv.DictReader(f, delimiter="\t")]


def download_folder(prefix: str, dest: str | Path, manifest: str | Path | None = None, progress: bool = True) -> int:
    """Download every manifest entry under ``prefix`` (e.g. ``train/``) into ``dest``; returns the count.

    Files already present are kept. A file whose source has another format than the listed name keeps the
    source's suffix (the prepared copies were re-encoded).

    Raises:
        NSTError: nothing is listed under ``prefix``, or a download fails (offline: the message says to
            set ``NST_DATA_DIR`` instead).
    """
    entries = [e for e in read_manifest(manifest) if e.relative_path.startswith(prefix)]
    if not entries:
        raise NSTError(f"the manifest {manifest or MANIFEST} lists no files under {prefix!r}")
    dest = Path(dest)
    for entry in tqdm(entries, desc=f"downloading {prefix}", unit="file", disable=not progress):
        rel = PurePosixPath(entry.relative_path).relative_to(prefix.rstrip("/"))
        target = dest / Path(rel).with_suffix(PurePosixPath(entry.url).suffix or rel.suffix)
        if target.exists():
            continue
        try:
            download(entry.url, target, checksum=entry.sha256 if entry.verifiable else None, progress=False)
        except NSTError as exc:
            raise NSTError(
                f"could not download the training photos into {dest} ({exc}). Offline, point NST_DATA_DIR "
                "(or data.root) at a folder that already holds them."
            ) from exc
    return len(entries)
