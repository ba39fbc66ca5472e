"""The job contract, read by every side: each kind has a task, a consumed queue and limits."""

from __future__ import annotations

from media_api.cli import build_parser
from media_api.jobs.contract import JOBS, MAINTENANCE_QUEUE, QUEUES, JobKind
from media_api.settings import Settings
from workers import tasks
from workers.celery_app import create_celery

SETTINGS = Settings(broker_url="redis://127.0.0.1:1/0", worker_metrics_port=0)


def test_every_kind_has_a_task_a_consumed_queue_and_limits() -> None:
    assert set(JOBS) == set(JobKind)
    assert len({job.task for job in JOBS.values()}) == len(JOBS)  # names are unique
    for job in JOBS.values():
        assert job.queue in QUEUES
        assert 0 < job.soft_time_limit(SETTINGS) < job.hard_time_limit(SETTINGS)
        assert job.kind in tasks.WORK
    assert MAINTENANCE_QUEUE in QUEUES


def test_a_worker_consumes_every_queue_by_default() -> None:
    args = build_parser().parse_args(["worker"])
    assert set(args.queues.split(",")) == set(QUEUES)


def test_the_celery_app_registers_routes_and_limits_each_task() -> None:
    app = create_celery(SETTINGS, sweep=False)
    declared = {queue.name for queue in app.conf.task_queues}
    assert declared == set(QUEUES)
    for job in JOBS.values():
        assert job.task in app.tasks
        assert app.conf.task_routes[job.task] == {"queue": job.queue}
        assert app.conf.task_annotations[job.task] == {
            "soft_time_limit": job.soft_time_limit(SETTINGS),
            "time_limit": job.hard_time_limit(SETTINGS),
        }
