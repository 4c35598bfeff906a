"""The embedded offline sample and the data folder's location.

``sample/`` (next to this file) holds the starry_night painting and 16 Kodak photos (PROVENANCE.md beside
them): enough for ``experiment=quick`` on a machine with no network and no data folder. Its layout mirrors a
data folder (``styles/``, ``train/``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nst_lightning.image import list_images

log = logging.getLogger(__name__)
SAMPLE_DIR = Path(__file__).resolve().with_name("sample")
DATA_DIR_ENV = "NST_DATA_DIR"
_reported: set[tuple[str, str]] = set()


def absolute_path(path: str | os.PathLike[str]) -> str:
    """``path`` (``~`` expanded) made absolute against the current directory."""
    return os.path.abspath(Path(path).expanduser())


def data_dir_from_env(default: str = "./data") -> str:
    """``$NST_DATA_DIR`` (else ``default``) as an absolute path, resolved against the current directory.

    A relative ``NST_DATA_DIR`` is rewritten in ``os.environ`` as the absolute path the first time, so child
    processes (DDP workers, subprocesses in other folders) see the folder the user meant. One exception:
    when the relative path does not exist from here but does from ``$PWD`` (the directory the shell started
    this process in; a Jupyter kernel runs in the notebook's folder instead), that one is taken.
    """
    raw = os.environ.get(DATA_DIR_ENV)
    if not raw:
        return absolute_path(default)
    path = Path(raw).expanduser()
    if not path.is_absolute():
        shell_dir = os.environ.get("PWD")
        if not path.exists() and shell_dir and (Path(shell_dir) / path).exists():
            path = Path(shell_dir) / path
        path = Path(os.path.abspath(path))
        os.environ[DATA_DIR_ENV] = str(path)
        log.info("%s=%s resolved to %s", DATA_DIR_ENV, raw, path)
    return str(path)


def _has_data(path: Path) -> bool:
    if path.is_file():
        return True
    return bool(list_images(path, recursive=True))


def sample_file(relative: str) -> Path | None:
    """The embedded sample's file ``relative`` (``styles/candy.jpg``), or None if the sample lacks it."""
    path = SAMPLE_DIR / relative
    return path if path.is_file() else None


def data_or_sample(path: str, sample_relative: str) -> str:
    """``path`` when it holds data (an existing file, or a folder with images), else the sample's
    ``sample_relative`` file or folder if the sample has it, else ``path`` unchanged (downloads as usual).

    Used by ``experiment=quick`` and ``experiment=finetune`` for ``data.root`` and ``style.image`` (the
    ``nst.data_or_sample`` resolver).
    """
    wanted = Path(path).expanduser()
    if _has_data(wanted):
        return path
    sample = SAMPLE_DIR / sample_relative
    if not _has_data(sample):
        return path
    if (path, sample_relative) not in _reported:
        _reported.add((path, sample_relative))
        log.info("no data at %s: using the embedded sample %s", wanted.absolute(), sample)
    return str(sample)
