"""The one place an Elasticsearch client is made: every client carries the configured credentials and TLS options.

Building clients anywhere else would let one of them (a health check, a reindex, a bulk load) talk to a secured
cluster without its credentials, or to an HTTPS one without the operator's CA.
"""

from __future__ import annotations

from typing import Any

from elasticsearch import AuthenticationException, AuthorizationException, Elasticsearch

from ..settings import Settings


def connection_options(settings: Settings) -> dict[str, Any]:
    """``Elasticsearch(...)`` keyword arguments for the credentials and TLS of ``settings`` (secrets included:
    never log them)."""
    options: dict[str, Any] = {}
    if settings.es_api_key is not None and settings.es_api_key.get_secret_value():
        options["api_key"] = settings.es_api_key.get_secret_value()
    elif settings.es_username:
        password = settings.es_password.get_secret_value() if settings.es_password is not None else ""
        options["basic_auth"] = (settings.es_username, password)
    if settings.es_ca_certs is not None:
        options["ca_certs"] = str(settings.es_ca_certs)
    if not settings.es_verify_certs:
        options["verify_certs"] = False
        options["ssl_show_warn"] = False
    return options


def es_client(settings: Settings, url: str, **options: Any) -> Elasticsearch:
    """A client of ``url`` with the configured credentials and TLS options; ``options`` add timeouts, retries."""
    return Elasticsearch(url, **connection_options(settings), **options)


def check_access(es: Elasticsearch, url: str) -> None:
    """Fail at start, clearly, when the cluster refuses our credentials (instead of a 500 on the first request).

    The message names the setting to fix, never its value.
    """
    try:
        es.cluster.health()
    except AuthenticationException as exc:
        raise RuntimeError(
            f"Elasticsearch at {url} refused the credentials (401 {exc.message}): check FHIR_ES_API_KEY or "
            "FHIR_ES_USERNAME / FHIR_ES_PASSWORD"
        ) from None
    except AuthorizationException as exc:
        raise RuntimeError(
            f"Elasticsearch at {url} authenticated the configured user but refused it cluster health (403 "
            f"{exc.message}): it needs the monitor cluster privilege and all privileges on the indexes"
        ) from None
