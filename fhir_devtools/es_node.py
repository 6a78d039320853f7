"""A managed local single-node Elasticsearch, so the server and the tests need no pre-installed cluster.

The distribution is the ``integ-test-zip`` artifact from Maven Central: small, JDK-less and with only
the modules we need (apm, transport-netty4, x-pack-core, x-pack-security).  It is unpacked once into
``<home>/elasticsearch-<version>`` and shared by every node; each node gets its own *data dir* holding
its config copy, data, logs, pid and state files, so several nodes (e.g. tests and a dev server) can
run side by side from one distribution.

Elasticsearch refuses to run as root, so when we are root the node runs as a dedicated system user
via ``setpriv`` (there is no sudo on the CI machines).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_server.settings import Settings

log = logging.getLogger(__name__)

ARTIFACT = "org.elasticsearch.distribution.integ-test-zip:elasticsearch:{version}:zip"
# Newest first; 9.3+ integ-test-zips are not on Maven Central (404), 9.2.8 is the newest that resolves.
FALLBACK_VERSIONS: tuple[str, ...] = ("9.2.8", "9.2.4", "9.1.5", "9.0.8")
MIN_JAVA = 21
JVM_DIRS: tuple[Path, ...] = (Path("/usr/lib/jvm"),)
HEALTH_PATH = "/_cluster/health?wait_for_status=yellow&timeout=1s"
# Settings we would like but that a stripped-down distribution may not know (no ML plugin here):
# dropped and retried when the node rejects them with "unknown setting".
OPTIONAL_SETTINGS: dict[str, str] = {"xpack.ml.enabled": "false"}


@dataclass
class NodeConfig:
    """Everything needed to provision, start and find one managed node."""

    version: str
    home: Path
    port: int
    heap: str
    user: str
    data_dir: Path
    name: str = "default"
    # Security on (basic auth, file realm, HTTP without TLS) with this superuser; None: security off
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        name: str = "default",
    ) -> NodeConfig:
        """Build a config from :class:`Settings`; overrides let tests run an isolated node."""
        home = Path(settings.es_home).expanduser()
        password = settings.es_password.get_secret_value() if settings.es_password is not None else None
        secured = bool(settings.es_username and password)
        return cls(
            version=settings.es_version,
            home=home,
            port=settings.es_port if port is None else port,
            heap=settings.es_heap,
            user=settings.es_user,
            data_dir=(home / "nodes" / name) if data_dir is None else Path(data_dir),
            name=name,
            username=settings.es_username if secured else None,
            password=password if secured else None,
        )

    @property
    def secured(self) -> bool:
        return self.username is not None and self.password is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "node.pid"

    @property
    def state_file(self) -> Path:
        """JSON with what was actually started (port/version may differ from the config)."""
        return self.data_dir / "node.json"

    @property
    def log_file(self) -> Path:
        """The node's stdout/stderr: the first place to look when it does not start."""
        return self.data_dir / "node.log"


# --------------------------------------------------------------------------- small helpers


def free_port() -> int:
    """A TCP port that was free a moment ago (the kernel picks it, so collisions are unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so concurrent processes never provision or start the same thing twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _is_root() -> bool:
    return os.geteuid() == 0


# --------------------------------------------------------------------------- provisioning


def _dist_dir(home: Path, version: str) -> Path:
    return home / f"elasticsearch-{version}"


def _mvn_fetch(version: str, dest: Path) -> Path | None:
    """Download the zip with Maven (Central only, the one source CI can reach); ``None`` if unresolvable."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(
            "Maven ('mvn') is required to download Elasticsearch; install it (apt install maven)"
        )
    cmd = [
        mvn, "-q", "-B", "-U", "dependency:copy",
        f"-Dartifact={ARTIFACT.format(version=version)}",
        f"-DoutputDirectory={dest}",
    ]  # fmt: skip
    log.info("downloading Elasticsearch %s: %s", version, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=dest, check=False)
    zips = sorted(dest.glob(f"elasticsearch-{version}*.zip"))
    if proc.returncode != 0 or not zips:
        log.warning("Elasticsearch %s did not resolve on Maven Central:\n%s", version, proc.stdout[-800:])
        return None
    return zips[0]


def _unzip(archive: Path, dest: Path) -> None:
    """Extract keeping Unix modes: zipfile drops them, and bin/* must stay executable."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = Path(zf.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o7777
            if mode and not info.is_dir():
                target.chmod(mode)
            elif "/bin/" in info.filename and not info.is_dir():
                target.chmod(0o755)


def _install(home: Path, version: str) -> Path | None:
    """Fetch and atomically install one version: unpack in a temp dir under home, then rename."""
    final = _dist_dir(home, version)
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=home) as tmp:
        tmp_path = Path(tmp)
        dl = tmp_path / "download"
        dl.mkdir()
        archive = _mvn_fetch(version, dl)
        if archive is None:
            return None
        out = tmp_path / "out"
        _unzip(archive, out)
        unpacked = out / final.name
        if not (unpacked / "bin" / "elasticsearch").exists():
            raise RuntimeError(f"{archive.name} does not contain {final.name}/bin/elasticsearch")
        unpacked.rename(final)
    return final


def _fallback_marker(home: Path, version: str) -> Path:
    return home / f".fallback-{version}"


def provision(cfg: NodeConfig) -> Path:
    """Return the unpacked distribution for ``cfg.version``, downloading it once if needed.

    When that version cannot be resolved, the first of :data:`FALLBACK_VERSIONS` that can is used
    (and remembered, so later runs do not retry the download).
    """
    home = cfg.home
    home.mkdir(parents=True, exist_ok=True)
    wanted = _dist_dir(home, cfg.version)
    if wanted.is_dir():
        return wanted
    with _flock(home / ".provision.lock"):
        marker = _fallback_marker(home, cfg.version)
        if marker.exists():
            remembered = _dist_dir(home, marker.read_text().strip())
            if remembered.is_dir():
                return remembered
        candidates = [cfg.version, *(v for v in FALLBACK_VERSIONS if v != cfg.version)]
        for version in candidates:
            existing = _dist_dir(home, version)
            dist = existing if existing.is_dir() else _install(home, version)
            if dist is None:
                continue
            if version != cfg.version:
                log.warning("Elasticsearch %s unavailable; using fallback %s", cfg.version, version)
                marker.write_text(version)
            return dist
    raise RuntimeError(f"could not download Elasticsearch from Maven Central; tried {', '.join(candidates)}")


# --------------------------------------------------------------------------- java


def _java_major(java_home: Path) -> int | None:
    """Major version from the JDK's ``release`` file (``1.8.0`` -> 8), or None if not a JDK."""
    try:
        text = (java_home / "release").read_text()
    except OSError:
        return None
    m = re.search(r'^JAVA_VERSION="?([0-9.]+)', text, re.MULTILINE)
    if m is None or not (java_home / "bin" / "java").exists():
        return None
    parts = m.group(1).split(".")
    return int(parts[1]) if parts[0] == "1" and len(parts) > 1 else int(parts[0])


def find_java_home() -> Path:
    """A JDK >= 21, since this distribution bundles none and the system default (17) is too old."""
    looked: list[str] = []
    for var in ("ES_JAVA_HOME", "JAVA_HOME"):
        value = os.environ.get(var)
        if value:
            major = _java_major(Path(value))
            looked.append(f"${var}={value} (java {major})")
            if major is not None and major >= MIN_JAVA:
                return Path(value)
    found: list[tuple[int, Path]] = []
    for base in JVM_DIRS:
        if base.is_dir():
            for cand in base.iterdir():
                major = _java_major(cand)
                if major is not None and major >= MIN_JAVA and not cand.is_symlink():
                    found.append((major, cand))
        looked.append(f"{base}/*")
    if found:
        return max(found)[1]
    raise RuntimeError(
        f"no JDK >= {MIN_JAVA} found (looked at {', '.join(looked)}); install one "
        f"(e.g. apt install openjdk-21-jdk-headless) or set ES_JAVA_HOME"
    )


# --------------------------------------------------------------------------- process helpers


def _pid_alive(pid: int) -> bool:
    """True for a live, non-zombie process (a dead child we spawned stays a zombie until reaped)."""
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rsplit(")", 1)[-1].split()[0] != "Z"


def _node_pid(cfg: NodeConfig) -> int | None:
    """Pid of the node on this data dir, checked against its command line so a recycled pid is ignored."""
    try:
        pid = int(cfg.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return pid  # no /proc: trust the pid file
    return pid if f"path.data={cfg.data_dir / 'data'}" in cmdline else None


def _read_state(cfg: NodeConfig) -> dict[str, Any]:
    try:
        return dict(json.loads(cfg.state_file.read_text()))
    except (OSError, ValueError):
        return {}


def _health(url: str, timeout: float = 3.0, auth: tuple[str, str] | None = None) -> str | None:
    """Cluster health colour, or None when the node does not answer (``GET /`` is 405 here) or refuses ``auth``."""
    request = urllib.request.Request(url + HEALTH_PATH)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return str(json.loads(resp.read()).get("status"))
    except (OSError, ValueError, urllib.error.URLError):
        return None


# --------------------------------------------------------------------------- running as root


def _ensure_user(user: str) -> pwd.struct_passwd:
    """Create the unprivileged system user the node runs as (ES refuses to run as root)."""
    try:
        return pwd.getpwnam(user)
    except KeyError:
        log.info("creating system user %s for Elasticsearch", user)
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True
        )
        return pwd.getpwnam(user)


def _grant_traverse(path: Path) -> None:
    """Let other users reach ``path`` (e.g. under /root/.cache) by adding o+x to every ancestor."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("chmod o+x %s so the Elasticsearch user can reach it", parent)
            parent.chmod(mode | stat.S_IXOTH)


def _chown_tree(path: Path, pw: pwd.struct_passwd) -> None:
    """Hand a node dir to the ES user; skipped when already theirs, as data dirs may be large."""
    st = path.stat()
    if (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid):
        return
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)
    os.chown(path, pw.pw_uid, pw.pw_gid)


# --------------------------------------------------------------------------- start / stop / status


def _prepare_dirs(cfg: NodeConfig, dist: Path, version: str) -> dict[str, Path]:
    """Per-node config copy (ES writes its keystore there), data, logs and tmp dirs."""
    dirs = {k: cfg.data_dir / k for k in ("config", "data", "logs", "tmp")}
    marker = dirs["config"] / ".es-version"
    if not marker.exists() or marker.read_text().strip() != version:
        shutil.rmtree(dirs["config"], ignore_errors=True)
        shutil.copytree(dist / "config", dirs["config"])
        marker.write_text(version)
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    if cfg.secured:
        _set_user(cfg, dist, dirs["config"])
    if _is_root():
        pw = _ensure_user(cfg.user)
        _grant_traverse(dist)
        _grant_traverse(cfg.data_dir)
        for d in dirs.values():
            _chown_tree(d, pw)
        for name in ("users", "users_roles"):  # rewritten above, possibly in a config dir already theirs
            with contextlib.suppress(FileNotFoundError):
                os.chown(dirs["config"] / name, pw.pw_uid, pw.pw_gid)
    return dirs


def _set_user(cfg: NodeConfig, dist: Path, config: Path) -> None:
    """Create (or re-password) the node's superuser in the file realm, offline, before the node starts.

    The password goes through stdin, never the command line (visible to every local user in ``ps``).
    """
    assert cfg.username is not None and cfg.password is not None
    try:
        known = any(line.split(":", 1)[0] == cfg.username for line in (config / "users").read_text().splitlines())
    except FileNotFoundError:
        known = False
    action = ["passwd", cfg.username] if known else ["useradd", cfg.username, "-r", "superuser"]
    env = {**os.environ, "ES_JAVA_HOME": str(find_java_home()), "ES_PATH_CONF": str(config)}
    env.pop("JAVA_HOME", None)
    proc = subprocess.run([str(dist / "bin" / "elasticsearch-users"), *action], input=f"{cfg.password}\n" * 2,
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"elasticsearch-users {action[0]} {cfg.username} failed ({proc.returncode}): "
                           f"{(proc.stdout + proc.stderr).replace(cfg.password, '***')[-800:]}")


def _command(cfg: NodeConfig, dist: Path, dirs: dict[str, Path], extra: dict[str, str]) -> list[str]:
    settings = {
        "discovery.type": "single-node",
        "network.host": "127.0.0.1",
        "http.port": str(cfg.port),
        "transport.port": str(free_port()),
        "xpack.security.enabled": "true" if cfg.secured else "false",
        # no certificates generated for the managed node: HTTP and transport stay plain (loopback only)
        **({"xpack.security.http.ssl.enabled": "false", "xpack.security.transport.ssl.enabled": "false",
            "xpack.security.autoconfiguration.enabled": "false"} if cfg.secured else {}),
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        "path.data": str(dirs["data"]),
        "path.logs": str(dirs["logs"]),
        "node.name": f"fhir-{cfg.name}",
        "cluster.name": f"fhir-{cfg.name}",
        "action.destructive_requires_name": "false",
        **extra,
    }
    cmd = [str(dist / "bin" / "elasticsearch")]
    for key, value in settings.items():
        cmd += ["-E", f"{key}={value}"]
    if _is_root():
        cmd = ["setpriv", "--reuid", cfg.user, "--regid", cfg.user, "--init-groups", "--", *cmd]
    return cmd


def _environment(cfg: NodeConfig, dirs: dict[str, Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "ES_JAVA_OPTS", "CLI_JAVA_OPTS")}
    env.update(
        ES_JAVA_HOME=str(find_java_home()),
        ES_PATH_CONF=str(dirs["config"]),
        ES_TMPDIR=str(dirs["tmp"]),
        ES_JAVA_OPTS=f"-Xms{cfg.heap} -Xmx{cfg.heap}",
    )
    return env


def _spawn(cfg: NodeConfig, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start detached (own session) so the node outlives us and a Ctrl-C in our terminal spares it."""
    with cfg.log_file.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=True,
        )  # fmt: skip
    cfg.pid_file.write_text(str(proc.pid))
    return proc


def _wait_ready(cfg: NodeConfig, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """True once the cluster is yellow; False if the process exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _health(cfg.url, timeout=2.0, auth=_auth(cfg)) in ("yellow", "green"):
            return True
        time.sleep(0.5)
    stop(cfg)
    raise RuntimeError(
        f"Elasticsearch on {cfg.url} not ready after {timeout:.0f}s (stopped it); "
        f"log {cfg.log_file}:\n{_tail(cfg.log_file)}"
    )


def _rejected_setting(cfg: NodeConfig, optional: dict[str, str]) -> str | None:
    text = _tail(cfg.log_file, 200)
    return next((k for k in optional if f"unknown setting [{k}]" in text), None)


def _launch(cfg: NodeConfig, dist: Path, version: str, *, wait: bool, timeout: float) -> None:
    """Spawn the node; on early exit drop an optional setting it rejected and retry, else fail."""
    dirs = _prepare_dirs(cfg, dist, version)
    env = _environment(cfg, dirs)
    optional = dict(OPTIONAL_SETTINGS)
    while True:
        proc = _spawn(cfg, _command(cfg, dist, dirs, optional), env, dirs["logs"])
        state = {"pid": proc.pid, "port": cfg.port, "version": version, "url": cfg.url, "security": cfg.secured}
        cfg.state_file.write_text(json.dumps(state))
        if not wait or _wait_ready(cfg, proc, timeout):
            return
        rejected = _rejected_setting(cfg, optional)
        if rejected is None:
            cfg.pid_file.unlink(missing_ok=True)
            raise RuntimeError(
                f"Elasticsearch exited with code {proc.returncode} during startup; "
                f"log {cfg.log_file}:\n{_tail(cfg.log_file)}"
            )
        log.info("Elasticsearch rejects setting %s; retrying without it", rejected)
        del optional[rejected]


def start(cfg: NodeConfig, *, wait: bool = True, timeout: float = 120) -> str:
    """Start the node in the background and return its URL.

    Idempotent: if a node already runs on ``cfg.data_dir`` its URL is returned (from its state file,
    so the port it was started with wins over ``cfg.port``), after waiting for health when ``wait``.
    """
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    with _flock(cfg.data_dir / ".start.lock"):
        pid = _node_pid(cfg)
        if pid is not None:
            url = str(_read_state(cfg).get("url", cfg.url))
            log.info("Elasticsearch already running on %s (pid %d)", url, pid)
            if wait:
                _wait_existing(url, timeout, _auth(cfg))
            return url
        if _port_in_use(cfg.port):
            raise RuntimeError(
                f"port {cfg.port} is already in use by another process; choose another es_port"
            )
        dist = provision(cfg)
        version = dist.name.removeprefix("elasticsearch-")
        log.info("starting Elasticsearch %s on %s (data %s)", version, cfg.url, cfg.data_dir)
        _launch(cfg, dist, version, wait=wait, timeout=timeout)
        return cfg.url


def _auth(cfg: NodeConfig) -> tuple[str, str] | None:
    return (cfg.username, cfg.password) if cfg.username is not None and cfg.password is not None else None


def _wait_existing(url: str, timeout: float, auth: tuple[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while _health(url, auth=auth) not in ("yellow", "green"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Elasticsearch at {url} is running but not healthy after {timeout:.0f}s")
        time.sleep(0.5)


def stop(cfg: NodeConfig, timeout: float = 30) -> None:
    """Stop the node: SIGTERM to its process group (CLI launcher + server JVM), SIGKILL after timeout."""
    pid = _node_pid(cfg)
    if pid is None:
        cfg.pid_file.unlink(missing_ok=True)
        return
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(pid):
        log.warning("Elasticsearch pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout)
        _signal_group(pid, signal.SIGKILL)
        while _group_alive(pid):
            time.sleep(0.1)
    cfg.pid_file.unlink(missing_ok=True)


def _group_alive(pid: int) -> bool:
    """Whether the launcher or its server JVM still runs: the data dir stays locked until both exit."""
    if _pid_alive(pid):
        return True
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _group_has_live_member(pid)


def _group_has_live_member(pgid: int) -> bool:
    """killpg also succeeds for zombies; look in /proc for a non-zombie member of the group."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """The node leads its own session, so signalling the group also reaches the server JVM child."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def status(cfg: NodeConfig) -> dict[str, Any]:
    """What the CLI's ``es status`` shows: running, pid, url, version and cluster health."""
    pid = _node_pid(cfg)
    state = _read_state(cfg)
    url = str(state.get("url", cfg.url))
    return {
        "running": pid is not None,
        "pid": pid,
        "url": url,
        "version": state.get("version", cfg.version),
        "health": _health(url, auth=_auth(cfg)) if pid is not None else None,
        "security": bool(state.get("security", False)),
        "data_dir": str(cfg.data_dir),
        "log": str(cfg.log_file),
    }
