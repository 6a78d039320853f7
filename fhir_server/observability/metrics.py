"""Prometheus metrics (``prometheus-client``, its default registry).

Labels never carry a resource id, a query or a token: interactions, status classes, canonical profile URLs
known to the server, error kinds. The backlog gauges are computed at scrape time (:class:`BacklogCollector`).
Several worker processes would need prometheus-client's multiprocess mode (not implemented).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

REQUEST_SECONDS = Histogram(
    "fhir_http_request_duration_seconds", "Time to answer a request under the FHIR base, by interaction",
    ["interaction", "status_class"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
VALIDATION_REJECTS = Counter(
    "fhir_validation_rejects", "Resources refused with 422 by validation, by profile they were checked against",
    ["profile"])
ES_ERRORS = Counter(
    "fhir_elasticsearch_errors", "Elasticsearch failures answered to a client: unavailable (503) or refused (400)",
    ["kind"])

BASE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"


@cache
def _known_profiles() -> frozenset[str]:
    from profiles import known_profiles

    return frozenset(url for url, _, _ in known_profiles())


def count_validation_reject(resource: Any, required: Mapping[str, Sequence[str]] | None) -> None:
    """One reject for each known profile the resource claims or its type requires, else for its base type
    (unknown profile URLs and types are not labels: a client could make up any number of them)."""
    from fhir_server.registry import get_type

    rt = resource.get("resourceType") if isinstance(resource, dict) else None
    rt = rt if isinstance(rt, str) and get_type(rt) is not None else "Resource"
    meta = resource.get("meta") if isinstance(resource, dict) else None
    claimed = meta.get("profile") if isinstance(meta, dict) else None
    urls = [u for u in claimed if isinstance(u, str)] if isinstance(claimed, list) else []
    urls += list((required or {}).get(rt, ()))
    profiles = {u.split("|")[0] for u in urls} & _known_profiles() or {BASE_PROFILE + rt}
    for profile in sorted(profiles):
        VALIDATION_REJECTS.labels(profile=profile).inc()


def count_es_error(status: int | None) -> None:
    ES_ERRORS.labels(kind="refused" if status is not None and 400 <= status < 500 and status != 429
                     else "unavailable").inc()


def observe_request(interaction: str, status: int, seconds: float) -> None:
    REQUEST_SECONDS.labels(interaction=interaction, status_class=f"{status // 100}xx").observe(seconds)


class BacklogCollector(Collector):
    """Outbox depth, index lag and audit journal backlog of one app (its ``app.state``), read at scrape time."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        from .backlog import audit_backlog_bytes, outbox_backlog

        ctx = getattr(self.state, "ctx", None)
        if ctx is not None:
            try:
                depth, lag = outbox_backlog(ctx.store)
            except Exception as exc:  # a scrape never fails over the store: the gauges are just absent
                log.warning("metrics: the outbox could not be read: %s", exc)
            else:
                yield GaugeMetricFamily("fhir_index_outbox_depth", "Writes not yet applied to the search index",
                                        value=depth)
                yield GaugeMetricFamily("fhir_index_lag_seconds",
                                        "Age of the oldest write not yet in the search index (0: none)", value=lag)
        writer = getattr(self.state, "audit", None)
        if writer is not None:
            yield GaugeMetricFamily("fhir_audit_journal_backlog_bytes",
                                    "Audit journal bytes not yet applied to the audit table",
                                    value=audit_backlog_bytes(writer))
            yield GaugeMetricFamily("fhir_audit_journal_failures", "Audit records that could not be journalled",
                                    value=writer.failures)


def exposition(state: Any) -> bytes:
    """The process-wide metrics and this app's backlog gauges, in the text format."""
    own = CollectorRegistry(auto_describe=False)
    own.register(BacklogCollector(state))
    return generate_latest(REGISTRY) + generate_latest(own)


def metrics_allowed(client_host: str | None, authorization: str | None, token: str | None) -> bool:
    """``FHIR_METRICS_TOKEN`` set: its bearer token, from anywhere; unset: loopback callers only."""
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    return client_host in ("127.0.0.1", "::1") or (client_host or "").startswith("127.")


CONTENT_TYPE = CONTENT_TYPE_LATEST
