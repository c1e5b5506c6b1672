"""A client generated from the reporter's OpenAPI document creates a task and reads its
assignment: the document is a contract a program in any language can build on.

The client comes from ``openapi-python-client`` (a generator users run themselves), made
from the ``/openapi.json`` the running reporter serves, into a temporary folder.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.test_reporter_contract import serving

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


def generate(spec: dict[str, Any], into: Path) -> Any:
    """Generate the client package from ``spec`` and import it."""
    (into / "openapi.json").write_text(json.dumps(spec))
    (into / "config.yaml").write_text("post_hooks: []\npackage_name_override: tally_api\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(into / "openapi.json"),
            "--output-path",
            str(into / "client"),
            "--config",
            str(into / "config.yaml"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    sys.path.insert(0, str(into / "client"))
    try:
        return importlib.import_module("tally_api")
    finally:
        sys.path.remove(str(into / "client"))


async def test_a_generated_client_creates_a_task_and_reads_its_assignment(
    harness: Harness, workspace: str, tmp_path: Path
) -> None:
    for service in ("quota", "estimator", "assigner", "tracker"):
        await harness.start(service)
    reporter = await harness.start("reporter")
    async with serving(reporter) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as http:
            spec = (await http.get("/openapi.json")).json()
        api = await asyncio.to_thread(generate, spec, tmp_path)
        create = importlib.import_module("tally_api.api.tasks.create_tasks_post")
        show = importlib.import_module("tally_api.api.tasks.show_tasks_task_id_get")
        models = importlib.import_module("tally_api.models")
        client = api.AuthenticatedClient(
            base_url=base_url, token=ADMIN_TOKEN, timeout=httpx.Timeout(60.0)
        )
        async with client:
            accepted = await create.asyncio(
                client=client,
                body=models.NewTask(title="Add OAuth login", workspace=workspace),
                wait=20.0,
            )
            assert isinstance(accepted, models.TaskAccepted), accepted
            task_id = accepted.task_id

            async def assigned() -> Any:
                view = await show.asyncio(task_id, client=client)
                # The view joins what each owner recorded: the assigner's assignment and
                # the tracker's task row land independently.
                if isinstance(view, models.TaskView) and view.assignments and view.workspace:
                    return view
                return None

            view = await harness.eventually(assigned, timeout=30, what="the task's assignment")
    assignment = view.assignments[0]
    assert view.task_id == task_id and view.workspace == workspace
    assert assignment.model and assignment.reservation_id
