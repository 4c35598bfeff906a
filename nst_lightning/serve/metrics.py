"""Prometheus metrics of one app instance (own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # no ``*_created`` timestamp series: they double the output and say little

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Requests, latency, cache hits/misses, errors, model time and queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("nst_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram(
            "nst_request_latency_seconds", "Request latency by route", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.errors = Counter("nst_errors", "Responses with status >= 400 by route and status", ["route", "status"],
                              registry=r)  # fmt: skip
        self.cache_hits = Counter("nst_cache_hits", "Stylize results served from the cache", registry=r)
        self.cache_misses = Counter("nst_cache_misses", "Stylize results computed by a model", registry=r)
        self.cache_errors = Counter("nst_cache_errors", "Cache backend failures (served without cache)", registry=r)
        self.model_seconds = Histogram(
            "nst_model_seconds", "Decode + model + encode time per computed result", ["style"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.in_flight = Gauge("nst_model_requests_in_flight", "Stylize requests running or queued", registry=r)
        self.rejected = Counter("nst_rejected", "Stylize requests refused with 503 because the queue was full",
                                registry=r)  # fmt: skip

    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry)
