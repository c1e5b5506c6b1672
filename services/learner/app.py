"""The learner: per-model performance, calibration and routing, learned from every run."""

from __future__ import annotations

import socket

from faststream.asgi import AsgiFastStream

from services.learner import handlers
from services.learner.daily import DailyPass
from services.learner.jobs.commands import JobCommands
from services.learner.jobs.pool import JobPool
from services.learner.jobs.runner import JobRunner
from services.learner.jobs.store import JobStore
from services.learner.learner import Learner
from services.learner.repo import LearnerRepo
from services.learner.rewards import RewardSelection, default_registry
from services.learner.settings import LearnerSettings
from tally.db import create_engine, ping
from tally.errors import ConfigError
from tally.events import new_id
from tally.lease import Lease
from tally.registry import load_models
from tally.service import ServiceKit


def create_app(settings: LearnerSettings | None = None) -> AsgiFastStream:
    settings = settings or LearnerSettings()
    kit = ServiceKit("learner", settings)
    engine = create_engine(settings.database_url)
    kit.probe("postgres", ping(engine))
    try:
        models = [m.name for m in load_models(settings.models_path)]
    except (ConfigError, OSError):
        # Without a registry the policy learns the models it sees in recorded runs.
        models = []
    rewards = default_registry(
        RewardSelection(default=settings.reward_default, by_task_type=settings.reward_by_task_type)
    )
    learner = Learner(kit.bus, LearnerRepo(engine), settings, models, rewards)
    store = JobStore(engine)
    jobs = JobCommands(store, learner)
    handlers.register(kit.bus, learner, jobs)
    # One replica learns (its trainer and policy versions per workspace are not shared
    # between processes); the others stand by and answer reports. Learning jobs run on
    # every replica: each claims a job from the work queue.
    kit.lead(
        Lease(
            kit.catalog,
            "learner",
            holder=f"learner-{socket.gethostname()}-{new_id()[:8]}",
            ttl_s=settings.lease_ttl_s,
            replicas=settings.stream_replicas,
        )
    )
    if settings.daily_enabled:
        kit.supervise("daily-pass", DailyPass(learner).run, leader_only=True)
    if settings.jobs_enabled:
        runner = JobRunner(
            store,
            learner.repo,
            models,
            usd_per_cpu_hour=settings.job_usd_per_cpu_hour,
            keep=settings.checkpoints_kept,
        )
        pool = JobPool(
            settings,
            kit.bus,
            runner,
            size=settings.job_workers,
            ack_wait_s=settings.job_ack_wait_s,
            on_completed=jobs.auto_promote,
        )
        kit.supervise("learning-jobs", pool.run)
        kit.supervise(
            "learning-jobs-watch", lambda: pool.watch(store, settings.job_metrics_every_s)
        )

    @kit.on_shutdown
    async def stop() -> None:
        await learner.close()
        await engine.dispose()

    return kit.app()
