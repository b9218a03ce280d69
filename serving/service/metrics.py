"""The service's Prometheus metrics: request latency and batch sizes, and a collector that reads
the serving state (versions, canary share, queue) at scrape time."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Summary,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from serving.service.encoder_state import ENCODE_KINDS
from serving.service.service import (
    RetrievalService,
    Served,
)
from serving.service.versions import VersionManager

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _StateCollector:
    def __init__(self, manager: VersionManager, service: RetrievalService) -> None:
        self.manager = manager
        self.service = service

    def collect(self):
        loaded = GaugeMetricFamily(
            "pinrec_loaded_version", "Versions loaded (1) by surface and role", labels=["surface", "role", "version"]
        )
        for surface, info in self.manager.loaded().items():
            for role in ("champion", "canary"):
                if info[role]:
                    loaded.add_metric([surface, role, info[role]], 1.0)
        yield loaded
        loads = CounterMetricFamily("pinrec_version_loads", "Version loads by result", labels=["surface", "result"])
        for (surface, result), n in sorted(self.manager.load_counts.items()):
            loads.add_metric([surface, result], n)
        yield loads
        failures = CounterMetricFamily(
            "pinrec_version_load_failures",
            "Versions not used because they failed to fetch, verify or load",
            labels=["surface", "version", "reason"],
        )
        for (surface, version, reason), n in sorted(self.manager.load_failures.items()):
            failures.add_metric([surface, version, reason], n)
        yield failures
        yield GaugeMetricFamily(
            "pinrec_ready",
            "1 when the process serves (a champion on at least one surface)",
            value=1.0 if self.manager.ready else 0.0,
        )
        surface_ready = GaugeMetricFamily(
            "pinrec_surface_ready", "1 when the surface has a champion loaded", labels=["surface"]
        )
        for surface in self.manager.surfaces:
            surface_ready.add_metric([surface], 1.0 if self.manager.surface_ready(surface) else 0.0)
        yield surface_ready
        fallbacks = CounterMetricFamily(
            "pinrec_version_fallbacks",
            "Times a surface fell back to an earlier champion (the pointer's would not load)",
            labels=["surface", "pointer_version", "serving_version"],
        )
        for (surface, wanted, serving), n in sorted(self.manager.fallback_counts.items()):
            fallbacks.add_metric([surface, wanted, serving], n)
        yield fallbacks
        serving_fallback = GaugeMetricFamily(
            "pinrec_serving_fallback",
            "1 while a surface serves an earlier champion than its pointer names",
            labels=["surface", "pointer_version", "serving_version"],
        )
        for surface, info in sorted(self.manager.fallbacks.items()):
            serving_fallback.add_metric([surface, info["pointer_version"], info["serving_version"]], 1.0)
        yield serving_fallback
        states = self.service.states
        kinds = CounterMetricFamily(
            "pinrec_encoder_state_requests",
            "Requests by how the user's encoder state was obtained "
            "(cold: no history; hit: unchanged; extend: new events only; "
            "full: encoded in full)",
            labels=["kind"],
        )
        for kind in ENCODE_KINDS:
            kinds.add_metric([kind], states.kinds[kind])
        yield kinds
        yield GaugeMetricFamily("pinrec_encoder_states", "Users with a cached encoder state", value=float(len(states)))
        yield GaugeMetricFamily(
            "pinrec_encoder_state_bytes", "Bytes of cached encoder states", value=float(states.nbytes)
        )


class Metrics:
    def __init__(
        self, manager: VersionManager, service: RetrievalService, registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "pinrec_requests",
            "Requests by endpoint, status and version",
            ["endpoint", "status", "version"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pinrec_request_duration_seconds",
            "Request latency in the app",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "pinrec_stage_duration_seconds",
            "Retrieval stage latency",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.feature_errors = Counter(
            "pinrec_feature_read_errors", "Feature store read failures", registry=self.registry
        )
        self.batch_size = Histogram(
            "pinrec_batch_size",
            "Requests per micro-batch, observed per request",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_flops = Summary(
            "pinrec_model_flops_per_request",
            "Model FLOPs of a request (positions encoded + head)",
            registry=self.registry,
        )
        self.registry.register(_StateCollector(manager, service))

    def observe(self, served: Served) -> None:
        for stage, ms in served.timings_ms.items():
            if stage != "total":
                self.stages.labels(stage).observe(ms / 1e3)
        self.batch_size.observe(served.batch_size)
        self.model_flops.observe(served.model_flops)
