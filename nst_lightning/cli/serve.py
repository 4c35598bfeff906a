"""``python serve.py [port=8000] [cache=redis cache.url=redis://...]``: the REST service and the web page."""

from __future__ import annotations

import logging
import shutil
from functools import partial

from omegaconf import DictConfig, OmegaConf

from nst_lightning.errors import BadValue
from nst_lightning.serve import ServeSettings, create_app
from nst_lightning.serve.server import check_port, private_tempdir, serve_forever

log = logging.getLogger(__name__)


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def settings_from_config(cfg: DictConfig) -> tuple[ServeSettings, str]:
    """The service settings and uvicorn's log level of a ``conf/serve.yaml`` config (every value checked)."""
    values: dict = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    log_level = values.pop("log_level")
    if log_level not in LOG_LEVELS:
        raise BadValue(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    return ServeSettings.from_mapping(values), log_level


def run(cfg: DictConfig) -> None:
    """Load the models once, then serve until interrupted (Ctrl-C or SIGTERM)."""
    settings, log_level = settings_from_config(cfg)
    check_port(settings.host, settings.port)
    # Entered before the runtimes' libraries are imported: they write temporary files there. uvicorn ends the
    # process by re-raising SIGTERM after the app's shutdown, so the folder also goes at that shutdown.
    with private_tempdir() as folder:
        app = create_app(settings)
        app.state.at_shutdown.append(partial(shutil.rmtree, folder, ignore_errors=True))
        log.info("serving %s on http://%s:%d/", ", ".join(sorted(app.state.styles)), settings.host, settings.port)
        if settings.hosts() is None and settings.allowed_hosts is None:
            log.warning("host=%s accepts any Host header; set allowed_hosts=[NAME] to the names clients use",
                        settings.host)  # fmt: skip
        serve_forever(app, settings, log_level)
