# One image for every Tally service; the command picks the service (`tally serve <name>`).
FROM python:3.11-slim
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy PATH="/app/.venv/bin:$PATH"
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md alembic.ini ./
COPY libs ./libs
COPY services ./services
COPY deploy/config ./deploy/config
RUN uv sync --frozen --no-dev
EXPOSE 8101-8106
CMD ["tally", "--help"]
