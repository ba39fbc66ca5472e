"""`media-api serve | worker | migrate | dev`."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from pydantic import SecretStr

from media_api import logs
from media_api.jobs.contract import QUEUES
from media_api.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from media_api import ops

log = logging.getLogger("media_api.cli")

DEV_EMAIL = "dev@localhost"
T = TypeVar("T")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from media_api.main import SERVER_OPTIONS
    from media_api.metrics import shared_across

    settings = Settings()

    def exit_ok(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    # uvicorn re-raises the stop signal once it has drained (for programs that embed it); here
    # a stop that drained is the expected end of a deploy, so it exits 0, not "killed by TERM".
    signal.signal(signal.SIGTERM, exit_ok)
    # With --workers N, a scrape of /metrics reaches one process: they share their counters
    # through files in a directory that lives as long as this command.
    with shared_across(args.workers):
        uvicorn.run(
            "media_api.main:create_served_app",
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=args.workers,
            # On SIGTERM: stop accepting, let requests in flight finish for this long, then
            # cancel them (a cancelled upload aborts what it stored: nothing is left half-written).
            timeout_graceful_shutdown=settings.shutdown_grace_seconds,
            **SERVER_OPTIONS,
        )
    return 0


def _worker(args: argparse.Namespace) -> int:
    # Imported here: `media_api` never imports `workers` at module level (import-linter),
    # the CLI is the one place that launches them.
    from importlib import import_module

    celery_app = import_module("workers.celery_app")
    settings = Settings()
    if args.metrics_port is not None:
        settings = settings.model_copy(update={"worker_metrics_port": args.metrics_port})
    app = celery_app.create_celery(settings, sweep=not args.no_sweep)
    argv = ["worker", "--loglevel", args.loglevel, "-Q", args.queues]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv)
    return 0


async def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one committed transaction on a short-lived engine."""
    from media_api.db import create_engine, session_factory

    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session:
            result = await work(session)
            await session.commit()
            return result
    finally:
        await engine.dispose()


def _create_key(args: argparse.Namespace) -> int:
    from media_api.accounts.service import AccountExists, key_for_email

    async def work(session: AsyncSession) -> str:
        return await key_for_email(session, args.email, args.name, existing=args.existing)

    try:
        token = asyncio.run(_with_session(Settings(), work))
    except AccountExists as exc:
        print(f"{exc.detail}: pass --existing to add a key to it", file=sys.stderr)
        return 1
    print(token)
    return 0


def _create_user(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from media_api.accounts.schemas import SignupIn
    from media_api.accounts.service import EmailTaken, signup

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass

        password = getpass.getpass(f"password for {args.email}: ")
    try:
        account = SignupIn(email=args.email, password=password)
    except ValidationError as exc:
        print(f"refused: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 1

    async def work(session: AsyncSession) -> uuid.UUID:
        owner = await signup(session, None, account.email, account.password)
        return owner.id

    try:
        owner_id = asyncio.run(_with_session(Settings(), work))
    except EmailTaken as exc:
        print(exc.detail, file=sys.stderr)
        return 1
    print(owner_id)
    return 0


def _dev_secret(data_dir: Path) -> str:
    """A random signing key for local use, kept (0600) so tokens survive a restart."""
    path = data_dir / "secret-key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48) + "\n")
    return path.read_text().strip()


def _dev_key(settings: Settings) -> str:
    """The dev user's API key: the saved one while it still works, else a new one (saved 0600)."""
    from media_api.accounts.service import is_valid_key, key_for_email

    path = settings.data_dir / "dev-api-key"
    saved = path.read_text().strip() if path.exists() else ""

    async def work(session: AsyncSession) -> str:
        if saved and await is_valid_key(session, saved):
            return saved
        return await key_for_email(session, DEV_EMAIL, "media-api dev")

    token = asyncio.run(_with_session(settings, work))
    if token != saved:
        path.touch(mode=0o600)
        path.write_text(token + "\n")
    return token


def _reprocess(args: argparse.Namespace) -> int:
    from media_api import ops

    async def work(session: AsyncSession) -> int:
        return await ops.reprocess(session, Settings(), all_=args.all, ids=args.ids)

    print(f"reprocessing {asyncio.run(_with_session(Settings(), work))} images")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from media_api import ops

    async def work(session: AsyncSession) -> ops.GcReport:
        grace = datetime.timedelta(seconds=args.grace_seconds)
        return await ops.gc(session, Settings(), apply=args.apply, grace=grace)

    report = asyncio.run(_with_session(Settings(), work))
    for key in report.orphan_objects:
        print(f"orphan object: {key}")
    for key in report.missing_originals:
        print(f"row without its original: {key}")
    print(
        f"{len(report.orphan_objects)} orphan objects"
        f" ({report.deleted} deleted{'' if args.apply else '; --apply deletes them'}),"
        f" {len(report.missing_originals)} rows without an original,"
        f" {report.young_skipped} objects younger than {args.grace_seconds:.0f} s skipped"
    )
    _print_upload_leftovers(report, args.apply)
    return 0


def _print_upload_leftovers(report: ops.GcReport, applied: bool) -> None:
    """gc's upload lines: what the upload sweep is behind on, and what no live upload owns."""
    for upload_id in report.lapsed_uploads:
        print(f"upload past expiry: {upload_id}")
    for key in report.orphan_quarantine:
        print(f"orphan quarantine object: {key}")
    for up in report.orphan_multipart:
        print(f"orphan multipart upload: {up.key} {up.upload_id}")
    print(
        f"{len(report.lapsed_uploads)} uploads past expiry (the sweep expires them),"
        f" {len(report.orphan_quarantine)} orphan quarantine objects"
        f" ({report.quarantine_deleted} deleted),"
        f" {len(report.orphan_multipart)} orphan multipart uploads"
        f" ({report.multipart_aborted} aborted{'' if applied else '; --apply removes both'})"
    )


def _stats(args: argparse.Namespace) -> int:
    from media_api import ops
    from media_api.images import repository

    if not (args.check or args.repair):
        print(json.dumps(asyncio.run(_with_session(Settings(), repository.stats)), indent=2))
        return 0

    async def work(session: AsyncSession) -> list[ops.QuotaDrift]:
        return await ops.check_quota(session, repair=args.repair)

    drift = asyncio.run(_with_session(Settings(), work))
    for found in drift:
        print(found)
    if args.repair:
        print(f"{len(drift)} owners repaired")
        return 0
    print(f"{len(drift)} owners drift" + ("; --repair fixes them" if drift else ""))
    return 1 if drift else 0


def _migrate(args: argparse.Namespace) -> int:
    from media_api.db import upgrade

    upgrade(Settings(), args.revision)
    return 0


class _Stop:
    """Turns SIGINT/SIGTERM into a flag the supervisor loop polls."""

    def __init__(self) -> None:
        self.event = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self.event.set()


def _wait_ready(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own URL
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _dev(args: argparse.Namespace) -> int:
    from media_api.dev import stack as devstack
    from media_api.dev.bootstrap import ready_stack, stack_env

    stop = _Stop()
    os.environ.setdefault("MEDIA_LOG_FORMAT", "text")  # people read these logs
    os.environ.setdefault("MEDIA_WEB_KEY_LINKS", "true")  # the link printed below
    os.environ.setdefault("MEDIA_WEBHOOK_ALLOW_PRIVATE", "true")  # webhooks to local receivers
    # Ctrl-C should not wait long: this grace plus the lifespan's cleanup bound (10 s) must
    # end before devstack kills the API (15 s).
    os.environ.setdefault("MEDIA_SHUTDOWN_GRACE_SECONDS", "3")
    settings = Settings()
    if args.data_dir:
        settings.data_dir = args.data_dir
    if settings.secret_key is None:
        secret = _dev_secret(settings.data_dir)
        os.environ["MEDIA_SECRET_KEY"] = secret  # for the API and worker processes
        settings = settings.model_copy(update={"secret_key": SecretStr(secret)})
    ports = {
        "postgres": settings.dev_postgres_port,
        "redis": settings.dev_redis_port,
        "s3": settings.dev_s3_port,
    }
    with ready_stack(settings, ports=ports) as stack:
        settings = stack.settings
        children = stack.services.children
        env = stack_env(settings)
        logs = settings.data_dir.resolve() / "logs"
        me = [sys.executable, "-m", "media_api.cli"]
        worker = [*me, "worker", "--concurrency", "2"]
        children.append(devstack.spawn("worker", worker, logs, env=env, inherit_output=True))
        children.append(devstack.spawn("api", [*me, "serve"], logs, env=env, inherit_output=True))
        token = _dev_key(settings)
        base = f"http://{settings.host}:{settings.port}"
        if not _wait_ready(f"{base}/readyz", timeout=60):
            log.error("the API did not become ready; see %s", logs)
            return 1
        for name, url in stack.services.urls.items():
            print(f"  {name}={url}")
        print(
            f"\nMedia service ready: {base}  (API docs: {base}/docs)\n"
            f"Web gallery, signed in as the dev user: {base}/#key={token}\n"
            f"Dev user {DEV_EMAIL}, API key (also in {settings.data_dir}/dev-api-key):\n"
            f"  export MEDIA_KEY={token}\n"
            f'  curl -H "Authorization: Bearer $MEDIA_KEY" -F file=@photo.jpg {base}/v1/images\n'
            "Ctrl-C stops everything."
        )
        sys.stdout.flush()
        while not stop.event.wait(0.5):
            dead = [c for c in children if c.popen.poll() is not None]
            if dead:
                log.error("%s exited unexpectedly (%s); stopping", dead[0].name, dead[0].tail(5))
                return 1
        return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line; each subcommand reads the rest of its settings from MEDIA_*."""
    parser = argparse.ArgumentParser(prog="media-api", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--queues", "-Q", default=",".join(QUEUES))
    worker.add_argument("--concurrency", "-c", type=int)
    worker.add_argument("--hostname", "-n")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument(
        "--no-sweep", action="store_true", help="do not run the stale-job sweeper in this worker"
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port (default MEDIA_WORKER_METRICS_PORT; 0 = off)",
    )
    worker.set_defaults(func=_worker)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(func=_migrate)

    reprocess = sub.add_parser("reprocess", help="run jobs again (default: failed images)")
    which = reprocess.add_mutually_exclusive_group()
    which.add_argument("--failed", action="store_true", help="images whose status is failed")
    which.add_argument("--all", action="store_true", help="every image")
    which.add_argument("ids", nargs="*", type=uuid.UUID, default=[], metavar="ID")
    reprocess.set_defaults(func=_reprocess)

    gc = sub.add_parser(
        "gc",
        help="find objects without a row, rows without an object, and abandoned uploads' leftovers",
    )
    gc.add_argument(
        "--apply",
        action="store_true",
        help="delete the orphan objects and abort the orphan multipart uploads",
    )
    gc.add_argument(
        "--grace-seconds",
        type=float,
        default=3600.0,  # ops.GC_GRACE: a fresh object may be an upload in flight
        help="leave younger objects alone: their upload may not have committed yet",
    )
    gc.set_defaults(func=_gc)

    stats = sub.add_parser("stats", help="counts of images, bytes and jobs")
    stats.add_argument(
        "--check",
        action="store_true",
        help="compare each owner's quota counter with its images' sizes; exit 1 on drift",
    )
    stats.add_argument("--repair", action="store_true", help="set drifted counters right")
    stats.set_defaults(func=_stats)

    key = sub.add_parser("create-key", help="print a new API key for an owner (created if new)")
    key.add_argument("email")
    key.add_argument("--name", default="cli")
    key.add_argument(
        "--existing",
        action="store_true",
        help="the account exists and has a password: add a key to it anyway",
    )
    key.set_defaults(func=_create_key)

    user = sub.add_parser(
        "create-user", help="create an account with a password (the way in when signup is closed)"
    )
    user.add_argument("email")
    user.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    user.set_defaults(func=_create_user)

    dev = sub.add_parser("dev", help="start the whole stack locally (embedded services)")
    dev.add_argument("--data-dir", type=Path)
    dev.set_defaults(func=_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `media-api` console script."""
    args = build_parser().parse_args(argv)
    settings = Settings()
    logs.configure(settings.log_format, settings.log_level)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
