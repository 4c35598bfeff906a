"""Prometheus metrics of one app instance (own registry, so several apps can live in one process).

Each stylize outcome has its own counter: ``hits`` (from the cache), ``shared`` (waited for an identical
request's result), ``misses`` (computed by a model), ``rejected`` (503: busy), ``client_aborted`` (the client left
before its response), and ``errors`` by status (every response ≥ 400). Every request, 500s and aborted ones
(status ``499``) included, is in ``nst_requests_total`` and the latency histogram.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # no ``*_created`` timestamp series: they double the output and say little

ABORTED = 499  # the status recorded for a request whose client left before its response was sent
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Requests, latency, outcomes, cache health, model time and what is held in memory."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("nst_requests", "HTTP requests by route and status (499: client left)",
                                ["route", "status"], registry=r)  # fmt: skip
        self.latency = Histogram(
            "nst_request_latency_seconds", "Request latency by route (every status)", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.errors = Counter("nst_errors", "Responses with status >= 400 by route and status", ["route", "status"],
                              registry=r)  # fmt: skip
        self.cache_hits = Counter("nst_cache_hits", "Stylize results served from the cache", registry=r)
        self.cache_misses = Counter("nst_cache_misses", "Stylize results computed by a model and sent", registry=r)
        self.shared = Counter("nst_shared", "Stylize results shared with an identical request in flight", registry=r)
        self.rejected = Counter("nst_rejected", "Requests refused with 503 (queue or upload slots full)", registry=r)
        self.client_aborted = Counter("nst_client_aborted", "Requests whose client left before the response",
                                      registry=r)  # fmt: skip
        self.timeouts = Counter("nst_body_timeouts", "Uploads that did not arrive within body_timeout_s (408)",
                                registry=r)  # fmt: skip
        self.upload_bytes = Counter("nst_upload_bytes", "Request body bytes read", registry=r)
        self.cache_errors = Counter("nst_cache_errors", "Cache backend failures (served without cache)", registry=r)
        self.cache_skipped = Counter("nst_cache_skipped", "Cache calls skipped while the breaker is open", registry=r)
        self.cache_open = Gauge("nst_cache_breaker_open", "1 while the cache is skipped after failures", registry=r)
        self.model_seconds = Histogram(
            "nst_model_seconds", "Model + encode time per computed result", ["style"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.decode_seconds = Histogram("nst_decode_seconds", "Upload decode and check time", buckets=LATENCY_BUCKETS,
                                        registry=r)  # fmt: skip
        self.in_flight = Gauge("nst_model_requests_in_flight", "Stylize requests running or queued", registry=r)
        self.uploads_held = Gauge("nst_uploads_held", "Request bodies held in memory", registry=r)

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one finished request (any status) and its latency."""
        self.requests.labels(route, status).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400 and status != ABORTED:
            self.errors.labels(route, status).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry)
