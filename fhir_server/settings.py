"""Configuration, read once from the environment (prefix ``FHIR_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url


class Settings(BaseSettings):
    """Every knob of the server; one instance per process (see :func:`get_settings`)."""

    model_config = SettingsConfigDict(env_prefix="FHIR_", extra="ignore")

    # Store of record
    db_url: str = Field(default="sqlite:///./var/fhir.sqlite3", description="SQLAlchemy URL of the store")
    # SQLite: how long a write waits for the store's lock held by another connection or process; beyond: 503
    db_busy_timeout_s: float = Field(default=30.0, ge=0)

    # Elasticsearch: unset means "the managed local node"
    es_url: str | None = None
    es_index_prefix: str = "fhir-"
    es_shards: int = 1
    es_replicas: int = 0
    es_timeout_s: float = 30.0
    # Credentials and TLS of the cluster (fhir_server/index/client.py builds every client with them): an API key
    # (the base64 "id:key" Elasticsearch returns) or a user and password (basic auth); never logged.
    # With FHIR_ES_URL unset, a username and password start the managed node with security on (that user).
    es_api_key: SecretStr | None = None
    es_username: str | None = None
    es_password: SecretStr | None = None
    es_ca_certs: Path | None = None  # PEM bundle of the CA(s) that signed the cluster's HTTPS certificate
    es_verify_certs: bool = True  # false: HTTPS without checking the certificate (a test cluster only)
    # Managed local node
    es_version: str = "9.2.8"
    es_home: Path = Path.home() / ".cache" / "fhir-server"
    es_port: int = 9200
    es_heap: str = "512m"
    es_user: str = "fhires"

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str | None = None  # public base for absolute links; default http://host:port/fhir
    max_body_bytes: int = 20 * 1024 * 1024  # after decoding a gzip/deflate body too (api/encoding.py)
    gzip_min_bytes: int = 1024  # answers at least this large are gzipped when the client accepts it; 0: never
    # Browser apps (api/cors.py): allowed origins, comma-separated ("https://app.example,https://b.example"),
    # or "*" for any; empty (default): CORS off. Credentials (cookies, TLS client certificates) only with a list.
    cors_origins: str = ""
    cors_credentials: bool = False
    # Request-shape limits (fhir_server/api/limits.py): past them a clear OperationOutcome, never a slow request
    max_url_bytes: int = 8192  # 414
    max_query_params: int = 100  # URL query or POST _search form pairs: 400 too-costly
    max_bundle_entries: int = 10_000  # transaction/batch Bundle.entry: 413 too-costly
    max_chain_depth: int = 3  # links of a chained parameter (a.b.c.d = 3): 400 too-costly
    max_has_depth: int = 2  # nested _has:...:_has:... : 400 too-costly
    max_included: int = 1000  # _include/_revinclude resources per page (beyond: a warning, rest dropped)
    es_search_timeout_s: float = 10.0  # one Elasticsearch call of a request; beyond: 503 + Retry-After

    # Search / paging
    # Key of the page cursors' MAC (>= 16 characters); unset: a random secret kept in the store, shared by every
    # process of that store. Set it to rotate (cursors issued before then answer 400).
    cursor_secret: SecretStr | None = None
    default_count: int = 20
    max_count: int = 1000
    history_default_count: int = 50
    search_consistency_timeout_s: float = 10.0  # how long a search waits for pending writes to be indexed
    # Points-in-time (snapshots) of paging on a sort other than the id (fhir_server/index/pits.py): at most
    # this many open in the process and for one client; past them, pages are read without a snapshot
    search_pit_max: int = 100
    search_pit_max_per_client: int = 8
    search_pit_keep_alive_s: int = 120  # idle time between two pages before the snapshot is dropped

    # Validation (profiles/): profiles every resource of a type must conform to, e.g.
    # FHIR_VALIDATION_REQUIRED_PROFILES='{"DocumentReference": ["https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-comprehensive-document-reference"]}'
    validation_required_profiles: dict[str, list[str]] = Field(default_factory=dict)
    # what a meta.profile unknown to the server yields: warning (default) | error | ignore
    validation_unknown_profile: Literal["warning", "error", "ignore"] = "warning"

    # Indexer
    indexer_batch_size: int = 500
    indexer_idle_poll_s: float = 1.0
    indexer_linger_s: float = 0.01  # gather a burst of writes into one bulk request and one refresh

    # Authentication: SMART on FHIR bearer tokens (JWT). "off" serves everyone (logged loudly at start).
    auth: Literal["jwt", "off"] = "off"
    auth_issuer: str | None = None  # expected `iss`
    auth_audience: str = "fhir-server"  # expected `aud`
    auth_jwks_url: str | None = None
    auth_jwks_file: Path | None = None
    # The authorisation server's endpoints (this server only verifies its tokens): published in
    # /.well-known/smart-configuration and the CapabilityStatement (SMART oauth-uris) for SMART clients
    auth_authorize_url: str | None = None
    auth_token_url: str | None = None
    auth_revoke_url: str | None = None
    auth_introspect_url: str | None = None

    # Audit (fhir_server/audit): an AuditEvent per interaction. fail-closed holds each answer until its
    # record is in the audit journal (and refuses it if the record cannot be written); async does not wait.
    # Unset: on whenever authentication is on (there is an identity to trace), off with FHIR_AUTH=off.
    audit: Literal["on", "off"] | None = None
    audit_mode: Literal["fail-closed", "async"] = "fail-closed"
    # normal: the answer waits for the journal append (survives a crash of the process), the journal is
    # fdatasync'ed within ~0.2 s (a power cut can lose that much trail); full: the answer waits for it too.
    audit_sync: Literal["normal", "full"] = "normal"
    # The journal's directory; unset: beside a SQLite store file (fhir.sqlite3 -> fhir-audit.journal/),
    # else ./var/audit-journal. Node-local: each server process takes a slot of its own in it.
    audit_journal_dir: Path | None = None
    # The applier that moves journalled records into the audit table: its own process (default; it does not
    # share the GIL with the requests) or a thread of the server.
    audit_applier: Literal["process", "thread"] = "process"
    # How long the journal may hold records before they are in the audit table (AuditEvent reads and
    # searches on this server wait for them anyway; other servers sharing a PostgreSQL trail see them then).
    audit_linger_s: float = 0.5

    # Operations (fhir_server/observability, api/health.py)
    ready_max_outbox_lag_s: float = 60.0  # /readyz fails when the oldest unindexed write is older
    ready_timeout_s: float = 2.0  # bound of each /readyz check (store, Elasticsearch)
    # /metrics: unset, served to loopback callers only; set, to callers sending it as a bearer token
    metrics_token: SecretStr | None = None
    log_format: Literal["json", "text"] | None = None  # unset: json for `serve`, text for the other commands
    log_level: str = "INFO"

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
