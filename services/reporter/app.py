"""The reporter: KPIs and reports over HTTP, live metrics on ``metrics.*``."""

from __future__ import annotations

from datetime import timedelta

from faststream.asgi import AsgiFastStream

from services.reporter import handlers
from services.reporter.api import create_api
from services.reporter.auth import TokenStore, guarded, raw_authorizer
from services.reporter.idp import JwtVerifier
from services.reporter.ingest import otlp_route
from services.reporter.live import LiveHub, nats_feed
from services.reporter.orphans import orphan_gauge
from services.reporter.otlp import Options
from services.reporter.ratelimit import RateLimiter
from services.reporter.repo import ReportRepo
from services.reporter.settings import ReporterSettings
from tally import metrics
from tally.client import TallyClient
from tally.db import create_engine, ping
from tally.events import utcnow
from tally.service import ServiceKit


def create_app(settings: ReporterSettings | None = None) -> AsgiFastStream:
    settings = settings or ReporterSettings()
    kit = ServiceKit("reporter", settings)
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    kit.probe("postgres", ping(engine))
    # Reads may go to a replica; the API's tokens stay on the primary.
    reads = engine
    if settings.read_database_url and settings.read_database_url != settings.database_url:
        reads = create_engine(settings.read_database_url)
        kit.probe("postgres-reads", ping(reads))
        kit.on_shutdown(reads.dispose)
    handlers.register(kit.bus, engine)
    kit.on_shutdown(engine.dispose)
    # The live page's one subscription to metrics.>, on the broker's connection.
    live = LiveHub(nats_feed(lambda: kit.broker.connection, kit.catalog))
    # Open streams end as soon as the process is asked to stop, not when browsers leave.
    kit.on_exit_signal(live.close)
    orphan_after = timedelta(seconds=settings.orphan_after_s)
    kit.supervise("orphans", orphan_gauge(reads, orphan_after, settings.orphan_check_s, utcnow))
    otlp = Options(
        run_attribute=settings.otlp_run_attribute,
        task_attribute=settings.otlp_task_attribute,
        workspace_attribute=settings.otlp_workspace_attribute,
        default_workspace=settings.workspace,
    )
    idp = None
    if settings.jwt_issuer and settings.jwt_audience and settings.jwt_jwks_url:
        idp = JwtVerifier(
            settings.jwt_issuer,
            settings.jwt_audience,
            settings.jwt_jwks_url,
            workspace_claim=settings.jwt_workspace_claim,
            scope_claim=settings.jwt_scope_claim,
        )
    tokens = TokenStore(engine, settings.bootstrap_token, idp)
    limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    traces = otlp_route(
        kit.bus.publish,
        otlp,
        max_bytes=settings.otlp_max_bytes,
        authorize=raw_authorizer(tokens, limiter, "tasks:write"),
    )
    api = create_api(
        ReportRepo(reads),
        live,
        lambda: TallyClient(kit.broker.connection, kit.catalog, source="api"),
        tokens,
        limiter=limiter,
        max_body_bytes=settings.max_body_bytes,
        namespace=settings.namespace,
        orphan_after=orphan_after,
        max_wait_s=settings.api_max_wait_s,
        lanes_fresh_s=settings.lanes_fresh_s,
        raw_routes=[traces],
    )
    api.state.live = live
    api.add_middleware(metrics.TimedHttp)
    app: AsgiFastStream = kit.app(api=api)
    if settings.metrics_token_required:
        guard = raw_authorizer(tokens, limiter, "reports:read")
        app.routes = [
            (path, guarded(handler, guard) if path == "/metrics" else handler)
            for path, handler in app.routes
        ]
    # Before the broker disconnects: open streams end and the subscription is dropped.
    app.on_shutdown(live.close)
    return app
