"""The assigner: the right model for each task, with its quota reserved first."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from services.assigner import handlers
from services.assigner.assigner import Assigner
from services.assigner.deferred import DeferredRetrier
from services.assigner.planner import BatchPlanner, register_batch
from services.assigner.repo import AssignmentRepo
from services.assigner.settings import AssignerSettings
from tally.db import create_engine, ping
from tally.registry import ModelRegistry
from tally.service import ServiceKit


def create_app(settings: AssignerSettings | None = None) -> AsgiFastStream:
    settings = settings or AssignerSettings()
    kit = ServiceKit("assigner", settings)
    engine = create_engine(settings.database_url)
    kit.probe("postgres", ping(engine))
    repo = AssignmentRepo(engine, settings.namespace)
    assigner = Assigner(kit.bus, repo, ModelRegistry(settings.models_path), settings)
    retrier = DeferredRetrier(
        assigner, repo, interval_s=settings.retry_interval_s, batch=settings.retry_batch
    )
    handlers.register(kit.bus, assigner, wake=retrier.wake if settings.retry_deferred else None)
    register_batch(kit.bus, BatchPlanner(assigner, repo))

    if settings.retry_deferred:
        kit.supervise("deferred-retrier", retrier.run)
    kit.on_shutdown(repo.close)
    kit.on_shutdown(engine.dispose)

    return kit.app()
