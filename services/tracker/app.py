"""The tracker: Tally's durable record of every task, run, token and status change."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from services.tracker import handlers
from services.tracker.repo import TrackerRepo
from services.tracker.settings import TrackerSettings
from tally.db import create_engine, ping
from tally.registry import ModelRegistry
from tally.service import ServiceKit, freeze_heap


def create_app(settings: TrackerSettings | None = None) -> AsgiFastStream:
    settings = settings or TrackerSettings()
    kit = ServiceKit("tracker", settings)
    engine = create_engine(settings.database_url)
    kit.probe("postgres", ping(engine))
    repo = TrackerRepo(engine)
    handlers.register(
        kit.bus, repo, ModelRegistry(settings.models_path), settle_wait_s=settings.settle_wait_s
    )
    kit.on_startup(freeze_heap)
    kit.on_shutdown(repo.close)
    kit.on_shutdown(engine.dispose)
    return kit.app()
