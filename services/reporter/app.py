"""The reporter: KPIs and reports over HTTP, live metrics on ``metrics.*``."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from services.reporter import handlers
from services.reporter.api import create_api
from services.reporter.repo import ReportRepo
from services.reporter.settings import ReporterSettings
from tally.db import create_engine
from tally.service import ServiceKit


def create_app(settings: ReporterSettings | None = None) -> AsgiFastStream:
    settings = settings or ReporterSettings()
    kit = ServiceKit("reporter", settings)
    engine = create_engine(settings.database_url)
    handlers.register(kit.bus)
    kit.on_shutdown(engine.dispose)
    return kit.app(api=create_api(ReportRepo(engine)))
