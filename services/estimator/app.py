"""The estimator: story points from history, hours and tokens as distributions, value."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from services.estimator import handlers
from services.estimator.repo import EstimatorRepo
from services.estimator.scoring import load_scoring_config
from services.estimator.settings import EstimatorSettings
from tally.db import create_engine, ping
from tally.service import ServiceKit


def create_app(settings: EstimatorSettings | None = None) -> AsgiFastStream:
    settings = settings or EstimatorSettings()
    kit = ServiceKit("estimator", settings)
    engine = create_engine(settings.database_url)
    kit.probe("postgres", ping(engine))
    repo = EstimatorRepo(engine)
    estimator = handlers.Estimator(
        repo,
        load_scoring_config(settings.scoring_path),
        settings.history_check_interval_s,
    )
    handlers.register(kit.bus, estimator)
    kit.on_shutdown(repo.close)
    kit.on_shutdown(engine.dispose)
    return kit.app()
