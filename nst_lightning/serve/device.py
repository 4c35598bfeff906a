"""``GET /device/{network}/``: stylize on this device — a served network's in-browser page (the ``format=web``
bundle: :func:`nst_lightning.export.web.export_web`), so a photo never leaves the user's machine.

Each network's bundle is exported once, on its first request, into a temporary folder (a few seconds, in a worker
thread; identical first requests wait for the same export) and then served as static files. Only the bundle's own
file names are served (no paths from the request reach the disk), with the cross-origin isolation headers that
let ONNX Runtime Web use WebAssembly threads.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import weakref
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse

from nst_lightning.errors import NotFound, NSTError
from nst_lightning.export.web import MODEL_FILE, ORT_FILES, PAGE_FILES
from nst_lightning.serve.guard import shorten
from nst_lightning.serve.models import StyleModel

MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
               ".json": "application/json", ".onnx": "application/octet-stream",
               ".wasm": "application/wasm"}  # fmt: skip
BUNDLE_FILES = {*PAGE_FILES, MODEL_FILE, "model.json", *(f"ort/{name}" for name in ORT_FILES)}
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


class DeviceBundles:
    """The in-browser bundle of each served network, exported on first use."""

    def __init__(self, styles: dict[str, StyleModel]) -> None:
        self.styles = styles
        self.folder = Path(tempfile.mkdtemp(prefix="nst-device-"))
        self.close = weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)  # at shutdown or exit
        self._exports: dict[str, asyncio.Future[Path]] = {}

    def source(self, network: str) -> str:
        """The model file of a served network (NotFound for others: a learned or unknown one)."""
        for model in self.styles.values():
            if model.network == network and not model.source.startswith("adapted:"):
                return model.source
        raise NotFound(f"no network {shorten(network)} to run on this device; see GET /styles")

    async def bundle(self, network: str) -> Path:
        source = self.source(network)
        if network not in self._exports:
            loop = asyncio.get_running_loop()
            self._exports[network] = loop.run_in_executor(None, self._export, network, source)
        try:
            return await asyncio.shield(self._exports[network])
        except NSTError:
            del self._exports[network]  # e.g. the npm files were missing: the next request tries again
            raise

    def _export(self, network: str, source: str) -> Path:
        from nst_lightning.export.web import export_web
        from nst_lightning.inference import load_model

        out = self.folder / network
        try:
            export_web(load_model(source), out)
        except NSTError as exc:
            raise NotFound(f"this service cannot offer {network} on the device: {exc}") from exc
        return out


def add_device_routes(app: FastAPI, styles: dict[str, StyleModel]) -> DeviceBundles:
    """Register ``GET /device/{network}/`` and its bundle's files."""
    bundles = DeviceBundles(styles)

    @app.get("/device/{network}", include_in_schema=False)
    async def device_root(network: str) -> RedirectResponse:
        return RedirectResponse(f"/device/{network}/index.html")

    @app.get("/device/{network}/{name:path}")
    async def device_file(network: str, name: str) -> FileResponse:
        """A file of the network's in-browser bundle (``index.html`` when ``name`` is empty)."""
        name = name or "index.html"
        if name not in BUNDLE_FILES:
            raise NotFound(f"no file {shorten(name)} in the on-device page")
        folder = await bundles.bundle(network)
        return FileResponse(folder / name, media_type=MEDIA_TYPES[Path(name).suffix], headers=ISOLATION)

    return bundles
