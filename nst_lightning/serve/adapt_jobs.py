"""``POST /adapt`` and ``GET /adapt/{job}``: learn a painting as a new style, as a background job with progress.

A job learns the painting's instance-norm scales and shifts on ``adapt_base`` (the shipped multi-style network by
default) for the minutes asked (:func:`nst_lightning.transfer.adapt.adapt_style`, cached by the painting's hash, so
the same painting and budget again is instant), then serves it as a new style under the name asked (``POST
/stylize`` with ``style=NAME``). Jobs run one at a time in one worker thread; at most ``max_adapt_jobs`` wait or
run (more: 503), each at most ``max_adapt_minutes``, and at most ``max_adapted_styles`` learned styles are kept.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import shutil
import tempfile
import threading
import uuid
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nst_lightning.errors import BadValue, NotFound, NSTError
from nst_lightning.image import open_image
from nst_lightning.inference import resolve_device
from nst_lightning.serve.errors import Busy
from nst_lightning.serve.guard import shorten
from nst_lightning.serve.models import STYLE_NAME, StyleModel, load_runner, make_thumbnail
from nst_lightning.serve.pipeline import read_form
from nst_lightning.serve.settings import ServeSettings
from nst_lightning.serve.uploads import image_part

log = logging.getLogger(__name__)


@dataclass
class AdaptJob:
    """What ``GET /adapt/{job}`` answers: ``status`` queued | running | done | failed, the fraction of the budget
    spent, the last step's objective, and the error of a failed job."""

    job: str
    style: str
    minutes: float
    status: str = "queued"
    fraction: float = 0.0
    step: int = 0
    objective: float | None = None
    cached: bool = False
    error: str | None = None


class AdaptJobs:
    """The bounded queue of adaptation jobs and the worker that runs them (started on first use)."""

    def __init__(self, settings: ServeSettings, styles: dict[str, StyleModel]) -> None:
        self.settings, self.styles = settings, styles
        self.jobs: dict[str, AdaptJob] = {}
        self._queue: queue.Queue[tuple[AdaptJob, Path]] = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._folder = Path(tempfile.mkdtemp(prefix="nst-adapt-"))
        self.close = weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)  # at shutdown or exit

    def active(self) -> int:
        return sum(j.status in ("queued", "running") for j in self.jobs.values())

    def submit(self, painting: bytes, minutes: float, name: str) -> AdaptJob:
        """Queue a job for the painting (its bytes, already bounded); refuses bad values (BadValue) and a full
        queue or style list (Busy)."""
        s = self.settings
        if not 0 < minutes <= s.max_adapt_minutes:
            raise BadValue(f"minutes must be more than 0 and at most {s.max_adapt_minutes:g}, got {minutes:g}")
        if not STYLE_NAME.match(name):
            raise BadValue(f"name must be letters, digits, '_', '.' or '-' (at most 64), got {shorten(name)}")
        image = open_image(painting, s.max_pixels).convert("RGB")  # Unreadable / TooLarge before anything waits
        with self._lock:
            taken = set(self.styles) | {j.style for j in self.jobs.values() if j.status != "failed"}
            if name in taken:
                raise BadValue(f"a style named {name!r} already exists; choose another name")
            if self.active() >= s.max_adapt_jobs:
                raise Busy(f"{s.max_adapt_jobs} adaptation jobs are already waiting or running; try again later")
            if sum(m.source.startswith("adapted:") for m in self.styles.values()) >= s.max_adapted_styles:
                raise Busy(f"the service keeps at most {s.max_adapted_styles} learned styles")
            job = AdaptJob(job=uuid.uuid4().hex[:16], style=name, minutes=float(minutes))
            self.jobs[job.job] = job
        folder = self._folder / hashlib.sha256(painting).hexdigest()[:16]
        folder.mkdir(exist_ok=True)
        path = folder / f"{name}.png"  # the file's stem names the new style; its pixels key the cache
        image.save(path)
        self._queue.put((job, path))
        self._start()
        return job

    def _start(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="adapt", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            job, path = self._queue.get()
            job.status = "running"
            try:
                self._learn(job, path)
                job.status, job.fraction = "done", 1.0
            except (NSTError, OSError, RuntimeError) as exc:
                job.status, job.error = "failed", str(exc).splitlines()[0]
                log.warning("adapt job %s failed: %s", job.job, job.error)

    def _learn(self, job: AdaptJob, path: Path) -> None:
        from nst_lightning.inference.checkpoint import write_model
        from nst_lightning.transfer.adapt import adapt_style

        def progress(p: dict[str, Any]) -> None:
            job.fraction, job.step, job.objective = float(p["fraction"]), int(p["step"]), float(p["objective"])

        loaded = adapt_style(path, job.minutes, self.settings.adapt_base, name=job.style, progress=progress)
        job.cached = bool(loaded.meta["adapted"]["cached"])
        network = write_model(loaded, path.with_name(f"{job.style}.network.pt"))
        runner = load_runner(network, "eager", resolve_device(self.settings.device))
        own = list(loaded.net.style_names)
        digest = path.parent.name  # the painting's hash: results of another painting under this name never collide
        model = StyleModel(name=job.style, runner=runner, source=f"adapted:{path.name}", network=job.style,
                           style=job.style, network_styles=own,
                           cache_id=f"adapted:{digest}:{job.minutes:g}:{self.settings.adapt_base}")  # fmt: skip
        model.thumbnail = make_thumbnail(model, self.settings.thumbnail_size)
        with self._lock:
            self.styles[job.style] = model
        log.info("adapt job %s: style %r served (%d steps%s)", job.job, job.style, job.step,
                 ", from the cache" if job.cached else "")  # fmt: skip


def add_adapt_routes(app: FastAPI, settings: ServeSettings, styles: dict[str, StyleModel]) -> AdaptJobs:
    """Register ``POST /adapt`` (202 with the job) and ``GET /adapt/{job}`` on ``app``."""
    jobs = AdaptJobs(settings, styles)

    @app.post("/adapt", status_code=202)
    async def adapt(request: Request) -> JSONResponse:
        """Multipart form: ``style_image`` (file), ``minutes`` (the budget), ``name`` (the new style's name).
        Answers 202 with the job; poll ``GET /adapt/{job}``; when it is done, ``POST /stylize`` takes
        ``style=NAME``."""
        form = await read_form(request)
        painting = image_part(form, "style_image", settings.max_upload_mb, "send the painting as style_image")
        raw = form.fields.get("minutes", "").strip()
        try:
            minutes = float(raw)
        except ValueError:
            raise BadValue(f"minutes must be a number, got {shorten(raw)}") from None
        job = jobs.submit(painting.data, minutes, form.fields.get("name", "").strip())
        return JSONResponse(asdict(job), status_code=202)

    @app.get("/adapt/{job_id}")
    async def adapt_status(job_id: str) -> dict[str, Any]:
        """The job's status and progress."""
        job = jobs.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no adaptation job {shorten(job_id)}")
        return asdict(job)

    return jobs
