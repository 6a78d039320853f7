"""Configuration, read once from the environment (prefix ``FHIR_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url


class Settings(BaseSettings):
    """Every knob of the server; one instance per process (see :func:`get_settings`).

    Each field's ``description`` is its documentation: ``docs/configuration.md`` is generated from them
    (``python -m fhir_devtools.settings_doc``)."""

    model_config = SettingsConfigDict(env_prefix="FHIR_", extra="ignore")

    # Store of record
    db_url: str = Field(
        default="sqlite:///./var/fhir.sqlite3",
        description="SQLAlchemy URL of the store of record; `postgresql+psycopg://user:pw@host:5432/db` for "
        "PostgreSQL (the schema is created or migrated on start).")
    db_busy_timeout_s: float = Field(
        default=30.0, ge=0,
        description="SQLite: how long a write waits for the store's lock held by another connection or process; "
        "beyond, 503 `transient` + `Retry-After`.")

    # Elasticsearch: unset means "the managed local node"
    es_url: str | None = Field(
        default=None, description="An existing Elasticsearch cluster; unset: the managed local node.")
    es_index_prefix: str = Field(default="fhir-", description="Prefix of every index and alias.")
    es_shards: int = Field(default=1, description="Primary shards of new physical indices.")
    es_replicas: int = Field(default=0, description="Replicas of new physical indices.")
    es_timeout_s: float = Field(
        default=30.0, description="Bound of each Elasticsearch call made by writes and indexing.")
    es_api_key: SecretStr | None = Field(
        default=None, description="Elasticsearch API key (the base64 `id:key` Elasticsearch returns); wins over a "
        "username. Never logged. Every client is built with it (`fhir_server/index/client.py`).")
    es_username: str | None = Field(
        default=None, description="Elasticsearch user (basic auth). With `FHIR_ES_URL` unset, a username and "
        "password start the managed node with security on, as that user.")
    es_password: SecretStr | None = Field(default=None, description="Password of `FHIR_ES_USERNAME`. Never logged.")
    es_ca_certs: Path | None = Field(
        default=None, description="PEM bundle of the CA(s) that signed the cluster's HTTPS certificate.")
    es_verify_certs: bool = Field(
        default=True, description="Check the cluster's HTTPS certificate; false only for a test cluster.")
    # Managed local node
    es_version: str = Field(
        default="9.2.8", description="Managed node: Elasticsearch version fetched from Maven Central.")
    es_home: Path = Field(
        default=Path.home() / ".cache" / "fhir-server",
        description="Managed node: where the distribution is unpacked and its data kept.")
    es_port: int = Field(default=9200, description="Managed node: HTTP port (loopback).")
    es_heap: str = Field(default="512m", description="Managed node: JVM heap size.")
    es_user: str = Field(default="fhires", description="Managed node: system user it runs as when started by root.")

    # HTTP
    host: str = Field(default="127.0.0.1", description="Address `serve` listens on.")
    port: int = Field(default=8080, description="Port `serve` listens on.")
    base_url: str | None = Field(
        default=None,
        description="Public base used in every absolute link (`Location`, `fullUrl`, paging); "
        "unset: `http://HOST:PORT/fhir`.")
    max_body_bytes: int = Field(
        default=20 * 1024 * 1024,
        description="Larger request bodies get 413; for a gzip/deflate body, its decoded size (api/encoding.py).")
    gzip_min_bytes: int = Field(
        default=1024,
        description="Answers at least this large are gzipped for clients sending `Accept-Encoding: gzip`; "
        "`0`: never.")
    # Browser apps (api/cors.py)
    cors_origins: str = Field(
        default="",
        description="Origins browser apps may call from, comma-separated "
        "(`https://app.example,https://b.example`), or `*` for any; empty: CORS off.")
    cors_credentials: bool = Field(
        default=False,
        description="Allow credentials (cookies, TLS client certificates); only with a list of origins "
        "(`*` with `true` refuses to start).")
    # Request-shape limits (fhir_server/api/limits.py): past them a clear OperationOutcome, never a slow request
    max_url_bytes: int = Field(default=8192, description="Longer URL: 414.")
    max_query_params: int = Field(
        default=100, description="More search parameters (URL query or POST `_search` form pairs): 400 `too-costly`.")
    max_bundle_entries: int = Field(
        default=10_000, description="Larger transaction/batch Bundle: 413 `too-costly` (`Bundle.entry`).")
    max_chain_depth: int = Field(
        default=3,
        description="Links of a chained parameter (`a.b.c.d` is 3); longer: 400 `too-costly` naming the parameter.")
    max_has_depth: int = Field(
        default=2, description="Nesting of `_has:...:_has:...`; deeper: 400 `too-costly` naming the parameter.")
    max_included: int = Field(
        default=1000,
        description="`_include`/`_revinclude` resources per page; beyond, a warning OperationOutcome entry and "
        "the rest dropped.")
    es_search_timeout_s: float = Field(
        default=10.0,
        description="Bound of each Elasticsearch call made for a request (writes and indexing keep "
        "`FHIR_ES_TIMEOUT_S`); beyond: 503 + `Retry-After`.")

    # Search / paging
    cursor_secret: SecretStr | None = Field(
        default=None,
        description="Key (16+ characters) of the page cursors' MAC; unset: a random secret kept in the store, "
        "shared by every process of that store (processes sharing a store set the same value or none). Setting or "
        "changing it makes earlier `next` links 400.")
    default_count: int = Field(default=20, description="Search page size when `_count` is not given.")
    max_count: int = Field(default=1000, description="Largest search page size (`_count` above it is lowered).")
    history_default_count: int = Field(default=50, description="History page size when `_count` is not given.")
    search_consistency_timeout_s: float = Field(
        default=10.0,
        description="How long a search waits for pending writes to become searchable before a 503.")
    # Points-in-time (snapshots) of paging on a sort other than the id (fhir_server/index/pits.py)
    search_pit_max: int = Field(
        default=100,
        description="Paging snapshots (Elasticsearch points-in-time) open at once in the process; past it, "
        "pages are read without a snapshot.")
    search_pit_max_per_client: int = Field(
        default=8,
        description="Paging snapshots open at once for one client (token subject, else peer address).")
    search_pit_keep_alive_s: int = Field(
        default=120, description="Idle time between two pages before the snapshot is dropped.")

    # Validation (profiles/)
    validation_required_profiles: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Profiles every resource of a type must conform to, as JSON, e.g. "
        "`{\"DocumentReference\": [\"https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
        "pdsm-comprehensive-document-reference\"]}`.")
    validation_unknown_profile: Literal["warning", "error", "ignore"] = Field(
        default="warning", description="What a `meta.profile` unknown to the server yields.")

    # Indexer
    indexer_batch_size: int = Field(default=500, description="Outbox rows the indexer takes per bulk request.")
    indexer_idle_poll_s: float = Field(
        default=1.0, description="How often an idle indexer looks at the outbox for writes it was not told of.")
    indexer_linger_s: float = Field(
        default=0.01, description="Gathers a burst of writes into one bulk request and one refresh.")

    # Authentication: SMART on FHIR bearer tokens (JWT). "off" serves everyone (logged loudly at start).
    auth: Literal["jwt", "off"] = Field(
        default="off",
        description="`jwt`: SMART on FHIR bearer tokens (see docs/security.md); `off` serves everyone "
        "(logged loudly at start).")
    auth_issuer: str | None = Field(default=None, description="Expected `iss` of the tokens.")
    auth_audience: str = Field(default="fhir-server", description="Expected `aud` of the tokens.")
    auth_jwks_url: str | None = Field(default=None, description="URL of the issuer's signing keys (JWKS).")
    auth_jwks_file: Path | None = Field(default=None, description="File holding the issuer's signing keys (JWKS).")
    # The authorisation server's endpoints (this server only verifies its tokens)
    auth_authorize_url: str | None = Field(
        default=None,
        description="Authorisation endpoint, published to SMART clients in `/.well-known/smart-configuration` "
        "and the CapabilityStatement (`oauth-uris`).")
    auth_token_url: str | None = Field(
        default=None, description="Token endpoint, published like `FHIR_AUTH_AUTHORIZE_URL`.")
    auth_revoke_url: str | None = Field(
        default=None, description="Revocation endpoint, published like `FHIR_AUTH_AUTHORIZE_URL`.")
    auth_introspect_url: str | None = Field(
        default=None, description="Introspection endpoint, published like `FHIR_AUTH_AUTHORIZE_URL`.")

    # Audit (fhir_server/audit): an AuditEvent per interaction.
    audit: Literal["on", "off"] | None = Field(
        default=None,
        description="The audit trail (an AuditEvent per interaction); unset: on whenever authentication is on "
        "(there is an identity to trace), off with `FHIR_AUTH=off`.")
    audit_mode: Literal["fail-closed", "async"] = Field(
        default="fail-closed",
        description="`fail-closed` holds each answer until its record is in the audit journal (and refuses it "
        "if the record cannot be written); `async` does not wait.")
    audit_sync: Literal["normal", "full"] = Field(
        default="normal",
        description="`normal`: the answer waits for the journal append (survives a crash of the process), the "
        "journal is fdatasync'ed within ~0.2 s (a power cut can lose that much trail); `full`: the answer waits "
        "for the fdatasync too.")
    audit_journal_dir: Path | None = Field(
        default=None,
        description="The journal's directory; unset: beside a SQLite store file "
        "(`fhir.sqlite3` -> `fhir-audit.journal/`), else `./var/audit-journal`. Node-local: each server process "
        "takes a slot of its own in it.")
    audit_applier: Literal["process", "thread"] = Field(
        default="process",
        description="What moves journalled records into the audit table: its own process (it does not share the "
        "GIL with the requests) or a thread of the server.")
    audit_linger_s: float = Field(
        default=0.5,
        description="How long the journal may hold records before they are in the audit table (AuditEvent reads "
        "and searches on this server wait for them anyway; other servers sharing a PostgreSQL trail see them "
        "then).")

    # Operations (fhir_server/observability, api/health.py)
    ready_max_outbox_lag_s: float = Field(
        default=60.0, description="`/readyz` fails when the oldest write not yet indexed is older.")
    ready_timeout_s: float = Field(default=2.0, description="Bound of each `/readyz` check (store, Elasticsearch).")
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token `/metrics` requires from any caller once set; unset: served to loopback "
        "callers only.")
    log_format: Literal["json", "text"] | None = Field(
        default=None, description="Log lines (each with its request id) on stderr; unset: `json` for `serve`, "
        "`text` for the other commands.")
    log_level: str = Field(default="INFO", description="Log level.")

    @property
    def audit_enabled(self) -> bool:
        if self.audit is None:
            return self.auth == "jwt"
        return self.audit == "on"

    @property
    def audit_journal(self) -> Path:
        """Where the audit journal lives (see ``audit_journal_dir``)."""
        if self.audit_journal_dir is not None:
            return self.audit_journal_dir
        url = make_url(self.db_url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            db = Path(url.database)
            return db.with_name(f"{db.stem}-audit.journal")
        return Path("var") / "audit-journal"

    @property
    def public_base(self) -> str:
        """Public base URL, without a trailing slash."""
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.host}:{self.port}/fhir"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
