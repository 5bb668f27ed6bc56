"""Many Pictor hosts on one machine: one Linux network namespace per host, joined by a bridge.

    with running_cluster(models_dir, webs=2, workers=2) as cluster:
        cluster.text2img(cluster.webs[0], "order-1")

A run gets a bridge `pbr<run>` with the subnet 10.213.N.0/24 (N random, the root namespace is
.1) and one namespace `pictor-<run>-<host>` per host, each with its own UTS name, so the `worker`
column of a job (`hostname:pid`) names the host that ran it. The hosts share nothing but the
network:

- `services`: its own PostgreSQL (initdb as the postgres user, fsync off), a Redis without
  persistence, and moto's S3 server;
- web hosts run gunicorn, worker hosts `manage.py worker`; each has its own empty working
  directory (cwd, PICTOR_VAR_DIR, HOME, TMPDIR) and its own copy of the demo models.

The root namespace reaches every host through the bridge: the test client, the SQL reads, the
admin commands (migrate, apikey) and a webhook receiver on .1 that records every delivery.

Everything is torn down whatever happens (a failed test, Ctrl-C, SIGTERM); a run killed outright
leaves namespaces behind, which the next run removes (their owner process is gone).
Needs root and iproute2: locally a missing one skips, in CI (CI=true) it fails.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import xdist_worker
from tests.integration.conftest import s3_client, service_missing
from tests.processes import wait_until

ROOT = Path(__file__).resolve().parents[2]
MANAGE = ROOT / "manage.py"

NETNS_PREFIX = "pictor-"
STATE_PREFIX = "pictor-cluster-"
RUN_ID = re.compile(r"^[0-9a-f]{6}$")

WEB_PORT = 8000
PG_PORT = 5432
REDIS_PORT = 6379
S3_PORT = 5000
DATABASE = "pictor"
BUCKET = "pictor-cluster"
ORG = "cluster"
# Enterprise: 16 concurrent jobs and 1,200 requests a minute, so plan limits never shape a run.
PLAN = "enterprise"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}

# What every Pictor host gets unless a test says otherwise: short leases and sweeps so a killed
# worker's job comes back within seconds, one torch thread (2 CPU cores for the whole cluster).
DEFAULTS = {
    "PICTOR_JOB_LEASE": "4",
    "PICTOR_SWEEP_INTERVAL": "2",
    "PICTOR_WORKER_STOP_GRACE": "60",
    "PICTOR_BLOCKING_WAIT": "60",
    "PICTOR_SYNC_WAIT": "0",
    "PICTOR_WORKERS": "1",
    "PICTOR_TORCH_THREADS": "1",
    "WEB_CONCURRENCY": "1",
    "PICTOR_WEB_THREADS": "8",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}
# Inherited settings that would make a host share something with this machine.
DROPPED_PREFIXES = ("PICTOR_", "S3_", "AWS_", "DJANGO_", "PROMETHEUS_")
DROPPED = {
    "DATABASE_URL",
    "REDIS_URL",
    "MEDIA_ROOT",
    "STATIC_ROOT",
    "SECRET_KEY",
    "PYTHONPATH",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
}


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: the cluster tests must run there."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def require_namespaces() -> None:
    if os.geteuid() != 0:
        unavailable("the cluster tests create network namespaces: run them as root")
    for tool in ("ip", "unshare", "runuser"):
        if shutil.which(tool) is None:
            unavailable(f"the cluster tests need `{tool}` (iproute2, util-linux)")


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        service_missing("PostgreSQL", FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb"))
    return found[-1].parent


def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def quietly(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, timeout=30)


def netns_pids(netns: str) -> set[int]:
    """Live processes in the named network namespace (what `ip netns pids` prints)."""
    try:
        target = os.stat(f"/run/netns/{netns}")
    except OSError:
        return set()
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry.name}/ns/net")
            if (ns.st_dev, ns.st_ino) != (target.st_dev, target.st_ino):
                continue
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.add(int(entry.name))
    return found


def kill_netns(netns: str, bound: float = 15) -> None:
    """SIGKILL every process in the namespace until none is left (they may be forking)."""
    deadline = time.monotonic() + bound
    while pids := netns_pids(netns):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of {netns} survive SIGKILL: {sorted(pids)}")
        time.sleep(0.05)


def process_start_time(pid: int) -> str:
    """The kernel's start time of `pid` (clock ticks since boot): a pid plus this is unique."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return ""


def owner_alive(state_dir: Path) -> bool:
    try:
        pid, started = (state_dir / "owner").read_text().split()
    except (OSError, ValueError):
        return False
    return process_start_time(int(pid)) == started


def destroy_run(run_id: str) -> None:
    """Remove every trace of one run: processes, namespaces, links, its directory."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(f"{NETNS_PREFIX}{run_id}-"):
            with contextlib.suppress(RuntimeError):
                kill_netns(name)
            quietly("netns", "delete", name)
    for name in link_names():
        if name == f"pbr{run_id}" or re.fullmatch(rf"pv{run_id}\d+", name):
            quietly("link", "delete", name)
    shutil.rmtree(Path(tempfile.gettempdir()) / f"{STATE_PREFIX}{run_id}", ignore_errors=True)


def link_names() -> list[str]:
    return [
        line.split(":")[1].strip().split("@")[0]
        for line in ip("-o", "link", "show").splitlines()
        if line.count(":") >= 2
    ]


def clean_leftovers() -> None:
    """Remove what runs killed outright left behind (those whose owner process is gone)."""
    runs = set()
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(NETNS_PREFIX):
            runs.add(name[len(NETNS_PREFIX) :].split("-")[0])
    for name in link_names():
        if match := re.fullmatch(r"(?:pbr|pv)([0-9a-f]{6})\d*", name):
            runs.add(match.group(1))
    for path in Path(tempfile.gettempdir()).glob(f"{STATE_PREFIX}*"):
        runs.add(path.name[len(STATE_PREFIX) :])
    for run_id in runs:
        state = Path(tempfile.gettempdir()) / f"{STATE_PREFIX}{run_id}"
        if RUN_ID.match(run_id) and not owner_alive(state):
            destroy_run(run_id)


def free_subnet() -> str:
    """A 10.213.N prefix that no address or route of this machine uses.

    Each pytest-xdist worker of a run takes its own residue of N, so two clusters started at the
    same moment on two workers cannot both find the same N free before either takes it.
    """
    taken = ip("-o", "addr") + ip("route") + ip("-4", "route", "show", "table", "all")
    worker, workers = xdist_worker()
    choices = [n for n in range(256) if n % workers == worker and f"10.213.{n}." not in taken]
    return f"10.213.{random.choice(choices)}"


@dataclass(frozen=True)
class Delivery:
    """One webhook request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """An HTTP listener in the root namespace that answers 200 and records every delivery."""

    def __init__(self, address: str) -> None:
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.deliveries.append(Delivery(self.path, headers, body))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.server.daemon_threads = True
        self.address = address
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, track_id: str) -> str:
        return f"http://{self.address}:{self.port}/hooks/{track_id}"

    def by_path(self) -> dict[str, list[Delivery]]:
        with self.lock:
            found: dict[str, list[Delivery]] = {}
            for delivery in self.deliveries:
                found.setdefault(delivery.path.rsplit("/", 1)[-1], []).append(delivery)
            return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Host:
    """One machine of the cluster: a namespace, an address, a directory, its processes."""

    name: str
    role: str
    netns: str
    address: str
    veth: str
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    log_offsets: dict[str, int] = field(default_factory=dict)

    @property
    def workdir(self) -> Path:
        """The host's own working directory: cwd, PICTOR_VAR_DIR, HOME and TMPDIR."""
        return self.root / "work"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{WEB_PORT}"


class Cluster:
    """A bridge, the hosts on it, and the ways a test drives and inspects them."""

    def __init__(self, models_dir: Path, overrides: dict[str, str]) -> None:
        self.models_dir = models_dir
        self.overrides = overrides
        self.run_id = secrets.token_hex(3)
        self.dir = Path(tempfile.gettempdir()) / f"{STATE_PREFIX}{self.run_id}"
        self.dir.mkdir()
        # The postgres user must reach its data directory below this one.
        self.dir.chmod(0o755)
        (self.dir / "owner").write_text(f"{os.getpid()} {process_start_time(os.getpid())}")
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.bridge = f"pbr{self.run_id}"
        self.prefix = free_subnet()
        self.subnet = f"{self.prefix}.0/24"
        self.gateway = f"{self.prefix}.1"
        self.hosts: dict[str, Host] = {}
        self.webhooks: WebhookReceiver | None = None
        self.key = ""
        self.bucket = BUCKET

    # --- the network -----------------------------------------------------------------------

    def create_network(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        self.webhooks = WebhookReceiver(self.gateway)

    def add_host(self, name: str, role: str) -> Host:
        index = len(self.hosts)
        host = Host(
            name=name,
            role=role,
            netns=f"{NETNS_PREFIX}{self.run_id}-{name}",
            address=f"{self.prefix}.{index + 2}",
            veth=f"pv{self.run_id}{index}",
            root=self.dir / name,
        )
        self.hosts[name] = host
        peer = f"pn{self.run_id}{index}"
        ip("netns", "add", host.netns)
        ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", host.netns)
        ip("link", "set", host.veth, "master", self.bridge)
        ip("link", "set", host.veth, "up")
        ip("-n", host.netns, "link", "set", peer, "name", "eth0")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        (host.workdir / "tmp").mkdir(parents=True)
        return host

    def spawn(self, host: Host, name: str, argv: list[str]) -> subprocess.Popen:
        """Start `argv` on the host: in its namespace, under its host name, in a new session."""
        log = self.logs / f"{host.name}-{name}.log"
        host.log_offsets[name] = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [
                    *("ip", "netns", "exec", host.netns, "unshare", "--uts"),
                    *("sh", "-c", 'hostname "$0" && exec "$@"', host.name, *argv),
                ],
                cwd=host.workdir,
                env=host.env or None,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        host.processes[name] = proc
        return proc

    def log(self, host: Host, name: str, since_start: bool = True) -> str:
        """A process's log; by default only what its latest start wrote."""
        path = self.logs / f"{host.name}-{name}.log"
        if not path.exists():
            return ""
        data = path.read_bytes()
        if since_start:
            data = data[host.log_offsets.get(name, 0) :]
        return data.decode(errors="replace")

    def dump_logs(self, tail: int = 4000) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}"
            for path in sorted(self.logs.glob("*.log"))
        )

    # --- the services host -----------------------------------------------------------------

    @property
    def services(self) -> Host:
        return self.hosts["services"]

    @property
    def database_url(self) -> str:
        return f"postgres://postgres@{self.services.address}:{PG_PORT}/{DATABASE}"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.services.address}:{REDIS_PORT}/0"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.services.address}:{S3_PORT}"

    def start_services(self) -> None:
        bin_dir = postgres_bin()
        if shutil.which("redis-server") is None:
            service_missing("Redis", FileNotFoundError("no redis-server"))
        host = self.add_host("services", "services")
        pg = host.root / "pg"
        pg.mkdir()
        shutil.chown(pg, "postgres", "postgres")
        initdb = subprocess.run(
            [
                *("runuser", "-u", "postgres", "--", str(bin_dir / "initdb")),
                *("-D", str(pg / "data"), "-U", "postgres", "--auth=trust"),
                *("--no-sync", "--no-locale", "-E", "UTF8"),
            ],
            cwd=pg,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert initdb.returncode == 0, initdb.stdout + initdb.stderr
        with open(pg / "data" / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '{host.address}'\nport = {PG_PORT}\n"
                f"unix_socket_directories = '{pg}'\nmax_connections = 200\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        with open(pg / "data" / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {self.subnet} trust\n")
        self.spawn(
            host,
            "postgres",
            ["runuser", "-u", "postgres", "--", str(bin_dir / "postgres"), "-D", str(pg / "data")],
        )
        self.start_redis()
        self.spawn(
            host,
            "s3",
            [sys.executable, "-m", "moto.server", "-H", host.address, "-p", str(S3_PORT)],
        )
        self.wait_postgres()
        self.wait_s3()

    def start_redis(self) -> None:
        host = self.services
        self.spawn(
            host,
            "redis",
            [
                *("redis-server", "--bind", host.address, "--port", str(REDIS_PORT)),
                *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
                *("--dir", str(host.workdir)),
            ],
        )
        self.wait_for(
            "Redis",
            lambda: self.redis().ping(),
            bound=30,
            proc=(host, "redis"),
        )

    def restart_redis(self) -> None:
        """Kill the broker and start an empty one at the same address (no persistence)."""
        proc = self.services.processes["redis"]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.start_redis()

    # django-q2's list of pending tasks for the cluster named "pictor" (settings.Q_CLUSTER).
    broker_key = "django_q:pictor:q"

    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)

    def wait_postgres(self) -> None:
        import psycopg

        url = f"postgres://postgres@{self.services.address}:{PG_PORT}/postgres"

        def ready() -> bool:
            with psycopg.connect(url, connect_timeout=2):
                return True

        self.wait_for("PostgreSQL", ready, bound=60, proc=(self.services, "postgres"))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def wait_s3(self) -> None:
        self.wait_for(
            "moto S3",
            lambda: requests.get(self.s3_endpoint, timeout=2).status_code < 500,
            bound=60,
            proc=(self.services, "s3"),
        )
        s3 = self.s3()
        s3.create_bucket(Bucket=self.bucket)
        # Versioning tells a job written twice (two versions) from one written once.
        s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})

    def wait_for(self, what: str, check: Any, bound: float, proc: tuple[Host, str]) -> None:
        host, name = proc
        wait_until(check, bound, what, host.processes[name], lambda: self.log(host, name))

    def s3(self) -> Any:
        return s3_client(self.s3_endpoint)

    # --- Pictor hosts ----------------------------------------------------------------------

    def pictor_env(self, workdir: Path, models: Path, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(DROPPED_PREFIXES) and k not in DROPPED
        }
        assert self.webhooks is not None
        env.update(
            DJANGO_SETTINGS_MODULE="sdplatform.settings",
            PYTHONPATH=str(ROOT),
            HOME=str(workdir),
            TMPDIR=str(workdir / "tmp"),
            PICTOR_VAR_DIR=str(workdir),
            PICTOR_MODELS_DIR=str(models),
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            S3_BUCKET=self.bucket,
            S3_ENDPOINT_URL=self.s3_endpoint,
            S3_ACCESS_KEY_ID="test",
            S3_SECRET_ACCESS_KEY="test",
            S3_REGION="us-east-1",
            PICTOR_FETCH_ALLOWED_NETWORKS=self.subnet,
            PICTOR_FETCH_ALLOWED_PORTS=str(self.webhooks.port),
            **DEFAULTS,
        )
        env.update(self.overrides)
        env.update(extra)
        return env

    def manage(self, *args: str) -> str:
        """Run a management command from the root namespace against the services."""
        admin = self.dir / "admin"
        (admin / "tmp").mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, str(MANAGE), *args],
            cwd=admin,
            env=self.pictor_env(admin, self.models_dir),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def set_up_pictor(self) -> None:
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("build_demo_models")
        self.key = self.manage("apikey", "create", "--org", ORG, "--plan", PLAN).strip()

    def add_pictor_host(self, name: str, role: str, **env: str) -> Host:
        host = self.add_host(name, role)
        shutil.copytree(self.models_dir, host.models)
        host.env = self.pictor_env(host.workdir, host.models, **env)
        if role == "web":
            host.env.setdefault("PICTOR_BIND", f"{host.address}:{WEB_PORT}")
            host.env.setdefault("PICTOR_BASE_URL", host.url)
        return host

    @property
    def webs(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.role == "web"]

    @property
    def workers(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.role == "worker"]

    def start_web(self, host: Host) -> None:
        if (ROOT / "sdplatform" / "gunicorn.py").exists():
            argv = ["-m", "gunicorn", "-c", "python:sdplatform.gunicorn", "sdplatform.wsgi"]
        else:
            argv = [
                *("-m", "gunicorn", "sdplatform.wsgi", "--bind", host.env["PICTOR_BIND"]),
                *("--threads", host.env["PICTOR_WEB_THREADS"], "--graceful-timeout", "60"),
            ]
        self.spawn(host, "web", [sys.executable, *argv])

    def wait_web(self, host: Host, bound: float = 60) -> None:
        self.wait_for(
            f"{host.name}'s /readyz",
            lambda: client().get(host.url + "/readyz", timeout=3).status_code == 200,
            bound=bound,
            proc=(host, "web"),
        )

    def start_worker(self, host: Host) -> None:
        command = "worker" if worker_command_exists() else "qcluster"
        self.spawn(host, "worker", [sys.executable, str(MANAGE), command])

    def wait_worker(self, host: Host, bound: float = 90) -> None:
        """Until each worker process of the host has loaded the default model."""
        wanted = int(host.env["PICTOR_WORKERS"])
        self.wait_for(
            f"{host.name}'s worker",
            lambda: self.log(host, "worker").count("preloaded demo-sd15") >= wanted,
            bound=bound,
            proc=(host, "worker"),
        )

    def start(self, host: Host) -> None:
        if host.role == "web":
            self.start_web(host)
        else:
            self.start_worker(host)

    def wait(self, host: Host) -> None:
        if host.role == "web":
            self.wait_web(host)
        else:
            self.wait_worker(host)

    def stop(self, host: Host, bound: float) -> float:
        """SIGTERM each of the host's process groups; seconds until every process exited.

        Fails (after killing what is left) when a process outlives `bound`.
        """
        started = time.monotonic()
        for proc in host.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        while True:
            alive = {p.pid for p in host.processes.values() if p.poll() is None}
            alive |= netns_pids(host.netns)
            if not alive:
                return time.monotonic() - started
            if time.monotonic() - started > bound:
                self.kill(host)
                pytest.fail(
                    f"{host.name}: processes {sorted(alive)} still ran {bound}s after SIGTERM\n"
                    + self.dump_logs()
                )
            time.sleep(0.1)

    def kill(self, host: Host) -> None:
        """SIGKILL every process in the host's namespace, as a power cut would."""
        kill_netns(host.netns)
        for proc in host.processes.values():
            proc.wait(timeout=10)

    # --- the client side -------------------------------------------------------------------

    def text2img(
        self,
        web: Host,
        track_id: str,
        *,
        width: int = 128,
        height: int = 128,
        steps: int = 21,
        timeout: float = 30,
        session: requests.Session | None = None,
    ) -> requests.Response:
        """Submit a ModelsLab text2img job with a webhook; the track id makes each body unique."""
        assert self.webhooks is not None
        body = {
            "key": self.key,
            "prompt": f"a lighthouse at dusk, {track_id}",
            "width": width,
            "height": height,
            "num_inference_steps": steps,
            "samples": 1,
            "seed": sum(track_id.encode()),
            "track_id": track_id,
            "webhook": self.webhooks.url(track_id),
        }
        return (session or client()).post(f"{web.url}/api/v3/text2img", json=body, timeout=timeout)

    def a1111_txt2img(
        self,
        web: Host,
        prompt: str,
        *,
        width: int = 512,
        height: int = 512,
        steps: int = 20,
        timeout: float = 120,
    ) -> requests.Response:
        """AUTOMATIC1111's blocking txt2img: the answer carries the image itself."""
        body = {"prompt": prompt, "width": width, "height": height, "steps": steps, "seed": 7}
        return client().post(
            f"{web.url}/sdapi/v1/txt2img", json=body, auth=("pictor", self.key), timeout=timeout
        )

    def sql(self, query: str, *params: object) -> list[tuple]:
        """Rows straight from the services' PostgreSQL."""
        import psycopg

        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            return conn.execute(query, params).fetchall()

    def wait_jobs(self, job_ids: list[int], bound: float) -> dict[int, tuple]:
        """Until no job of `job_ids` is queued or processing; {id: (status, attempts, worker)}."""
        deadline = time.monotonic() + bound
        while True:
            rows = {
                row[0]: row[1:]
                for row in self.sql(
                    "SELECT id, status, attempts, worker FROM generation_job WHERE id = ANY(%s)",
                    job_ids,
                )
            }
            waiting = [i for i, r in rows.items() if r[0] in ("queued", "processing")]
            if not waiting and len(rows) == len(job_ids):
                return rows
            if time.monotonic() > deadline:
                pytest.fail(
                    f"jobs still waiting after {bound}s: "
                    f"{ {i: rows.get(i) for i in waiting} }\n{self.dump_logs()}"
                )
            time.sleep(0.3)

    def wait_webhooks(self, track_ids: set[str], bound: float) -> dict[str, list[Delivery]]:
        """Until every track id got a delivery (and a second for duplicates to show)."""
        assert self.webhooks is not None
        deadline = time.monotonic() + bound
        while not track_ids <= set(self.webhooks.by_path()):
            if time.monotonic() > deadline:
                missing = sorted(track_ids - set(self.webhooks.by_path()))
                pending = self.sql(
                    "SELECT job_id, status, attempts FROM generation_webhookdelivery"
                    " WHERE status <> 'delivered'"
                )
                pytest.fail(
                    f"no webhook after {bound}s for {missing}; undelivered: {pending}\n"
                    + self.dump_logs()
                )
            time.sleep(0.3)
        time.sleep(1)
        return self.webhooks.by_path()

    def images_on_disk(self) -> list[Path]:
        """Image files under any Pictor host's working directory (outputs belong in S3)."""
        return [
            path
            for host in self.hosts.values()
            if host.role in ("web", "worker")
            for path in host.workdir.rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES
        ]

    # --- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process of every host, then remove namespaces, links and files."""
        for host in reversed(list(self.hosts.values())):
            with contextlib.suppress(Exception):
                kill_netns(host.netns)
            for proc in host.processes.values():
                with contextlib.suppress(Exception):
                    proc.kill()
                    proc.wait(timeout=10)
        if self.webhooks is not None:
            self.webhooks.close()
        for host in self.hosts.values():
            quietly("netns", "delete", host.netns)
            quietly("link", "delete", host.veth)
        quietly("link", "delete", self.bridge)
        shutil.rmtree(self.dir, ignore_errors=True)


def client() -> requests.Session:
    """A client that talks to the bridge directly, whatever proxy this machine has."""
    session = requests.Session()
    session.trust_env = False
    return session


def worker_command_exists() -> bool:
    return (ROOT / "generation" / "management" / "commands" / "worker.py").exists()


@contextlib.contextmanager
def teardown_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (a CI timeout) into KeyboardInterrupt, so the teardown still runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C off while the teardown runs, so a second one cannot leave namespaces."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def running_cluster(
    models_dir: Path, *, webs: int = 2, workers: int = 2, start_workers: bool = True, **env: str
) -> Iterator[Cluster]:
    """A services host, `webs` web hosts and `workers` worker hosts, all started and ready.

    Web hosts are named web-1, web-2, ...; worker hosts worker-1, .... `env` overrides the
    settings of every Pictor host. With start_workers=False the worker hosts exist but are off.
    """
    require_namespaces()
    clean_leftovers()
    with teardown_on_sigterm():
        cluster = Cluster(models_dir, env)
        try:
            cluster.create_network()
            cluster.start_services()
            cluster.set_up_pictor()
            for n in range(1, webs + 1):
                cluster.start_web(cluster.add_pictor_host(f"web-{n}", "web"))
            for n in range(1, workers + 1):
                host = cluster.add_pictor_host(f"worker-{n}", "worker")
                if start_workers:
                    cluster.start_worker(host)
            for host in cluster.webs:
                cluster.wait_web(host)
            if start_workers:
                for host in cluster.workers:
                    cluster.wait_worker(host)
            yield cluster
        finally:
            with uninterrupted():
                cluster.close()


# --- checks shared by the cluster tests ------------------------------------------------------


def job_cost(width: int, height: int, steps: int, samples: int = 1) -> int:
    """What a job is charged: ceil(w × h / 512²) × ceil(steps / 21) credits per image."""
    return math.ceil(width * height / 512**2) * math.ceil(steps / 21) * samples


@dataclass
class Audit:
    """What became of the accepted jobs, read from the database, the bucket and the receiver."""

    statuses: Counter
    attempts: dict[int, int]
    workers: dict[int, str]
    outputs: dict[int, int]
    bucket_keys: set[str]
    expected_keys: set[str]
    versions: Counter
    delete_markers: list[str]
    debits: list[tuple[int, int]]
    refunds: int
    grants: int
    balance: int
    ledger_sum: int
    last_balance_after: int
    webhooks: dict[str, list[Delivery]] = field(default_factory=dict)

    @property
    def lost(self) -> list[int]:
        return sorted(i for i, n in self.outputs.items() if n == 0)

    def counts(self) -> dict[str, int]:
        """The figures a cluster test prints: jobs done, lost and written or announced twice."""
        return {
            "done": self.statuses["success"],
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
        }

    @property
    def duplicated(self) -> list[int]:
        """Jobs whose images were written more than once, or whose webhook came twice."""
        twice = {int(key.split("/")[2]) for key, count in self.versions.items() if count > 1}
        twice |= {int(hooks[0].json()["id"]) for hooks in self.webhooks.values() if len(hooks) > 1}
        return sorted(twice)


def audit(cluster: Cluster, job_ids: list[int], webhooks: bool = True) -> Audit:
    """Collect the facts the exactly-once assertions read."""
    (org_id,) = cluster.sql("SELECT id FROM accounts_organization WHERE slug = %s", ORG)[0]
    jobs = cluster.sql(
        "SELECT id, status, attempts, worker FROM generation_job WHERE id = ANY(%s)", job_ids
    )
    outputs = dict.fromkeys(job_ids, 0)
    outputs.update(
        cluster.sql(
            "SELECT job_id, count(*) FROM generation_outputimage WHERE job_id = ANY(%s)"
            " GROUP BY job_id",
            job_ids,
        )
    )
    s3 = cluster.s3()
    keys = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cluster.bucket)
        for o in page.get("Contents", [])
    }
    versions: Counter = Counter()
    markers = []
    for page in s3.get_paginator("list_object_versions").paginate(
        Bucket=cluster.bucket, Prefix="generations/"
    ):
        versions.update(v["Key"] for v in page.get("Versions", []))
        markers += [m["Key"] for m in page.get("DeleteMarkers", [])]
    samples = dict(
        cluster.sql(
            "SELECT id, (params->>'samples')::int FROM generation_job WHERE id = ANY(%s)", job_ids
        )
    )
    expected = {
        f"generations/{org_id}/{job_id}/{index}.png"
        for job_id in job_ids
        for index in range(samples[job_id])
    }
    debits = cluster.sql(
        "SELECT job_id, amount FROM billing_creditentry WHERE organization_id = %s"
        " AND kind = 'debit'",
        org_id,
    )
    (refunds,) = cluster.sql(
        "SELECT count(*) FROM billing_creditentry WHERE organization_id = %s AND kind = 'refund'",
        org_id,
    )[0]
    (grants,) = cluster.sql(
        "SELECT coalesce(sum(amount), 0) FROM billing_creditentry"
        " WHERE organization_id = %s AND kind = 'grant'",
        org_id,
    )[0]
    balance, ledger_sum, last = cluster.sql(
        "SELECT o.credit_balance, (SELECT sum(amount) FROM billing_creditentry"
        " WHERE organization_id = o.id), (SELECT balance_after FROM billing_creditentry"
        " WHERE organization_id = o.id ORDER BY id DESC LIMIT 1)"
        " FROM accounts_organization o WHERE o.id = %s",
        org_id,
    )[0]
    return Audit(
        statuses=Counter(row[1] for row in jobs),
        attempts={row[0]: row[2] for row in jobs},
        workers={row[0]: row[3] for row in jobs},
        outputs=outputs,
        bucket_keys=keys,
        expected_keys=expected,
        versions=versions,
        delete_markers=markers,
        debits=debits,
        refunds=refunds,
        grants=grants,
        balance=balance,
        ledger_sum=ledger_sum,
        last_balance_after=last,
        webhooks=cluster.webhooks.by_path() if webhooks and cluster.webhooks else {},
    )


def assert_exactly_once(
    cluster: Cluster,
    result: Audit,
    job_ids: list[int],
    costs: dict[int, int],
    track_ids: dict[int, str],
) -> None:
    """Every job succeeded once: images in S3 once, charged once, its webhook once."""
    logs = cluster.dump_logs
    assert result.statuses == Counter({"success": len(job_ids)}), (result.statuses, logs())
    assert result.lost == [], logs()
    assert all(n >= 1 for n in result.outputs.values())
    # The bucket holds the jobs' images and nothing else (the readiness probe's are deleted),
    # each written once.
    assert result.bucket_keys == result.expected_keys, sorted(
        result.bucket_keys ^ result.expected_keys
    )[:10]
    assert {k for k, n in result.versions.items() if n > 1} == set(), "images written twice"
    assert result.delete_markers == [], "an image was deleted and written again"
    assert cluster.images_on_disk() == []
    # The ledger: one debit per job of exactly its cost, no refund, the balance adds up.
    assert sorted(result.debits) == sorted((job_id, -costs[job_id]) for job_id in job_ids)
    assert result.refunds == 0
    assert result.balance == result.ledger_sum == result.last_balance_after
    assert result.balance == result.grants - sum(costs.values())
    # One webhook per job, about that job, each with its own Standard Webhooks id.
    for job_id, track_id in track_ids.items():
        hooks = result.webhooks.get(track_id, [])
        assert len(hooks) == 1, (track_id, job_id, len(hooks))
        payload = hooks[0].json()
        assert (payload["id"], payload["track_id"], payload["status"]) == (
            job_id,
            track_id,
            "success",
        )
        assert len(payload["output"]) == 1
    ids = [hooks[0].headers["webhook-id"] for hooks in result.webhooks.values()]
    assert len(ids) == len(set(ids))
