"""The published bus contract: complete, and regenerated whenever a model changes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tally import subjects
from tally.cli.main import app
from tally.contract import CHANNELS, asyncapi, documents, json_schemas

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract"
REGENERATE = "the bus contract is stale: run `uv run tally schema export docs/contract`"


def test_the_committed_contract_matches_the_models() -> None:
    expected = documents()
    committed = {
        str(p.relative_to(CONTRACT)): p.read_text() for p in CONTRACT.rglob("*") if p.is_file()
    }
    assert sorted(committed) == sorted(expected), REGENERATE
    stale = [name for name, text in expected.items() if committed[name] != text]
    assert not stale, f"{REGENERATE} ({', '.join(stale)})"


def test_every_subject_of_the_catalogue_is_documented_with_a_schema() -> None:
    streamed = {s for spec in subjects.STREAMS for s in spec.subjects if s != "dlq.>"}
    assert "dlq.{service}" in {c.subject for c in CHANNELS}
    documented = {c.subject for c in CHANNELS}
    assert streamed | set(subjects.UNSTREAMED) <= documented
    doc = asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    titles = {ch["title"] for ch in doc["channels"].values()}
    assert documented == titles
    for channel in doc["channels"].values():
        for ref in channel["messages"].values():
            name = ref["$ref"].rsplit("/", 1)[1]
            payload = doc["components"]["messages"][name]["payload"]["$ref"]
            assert payload.rsplit("/", 1)[1] in doc["components"]["schemas"]


def test_streams_publishers_and_consumers_are_named() -> None:
    channels = {ch["title"]: ch for ch in asyncapi()["channels"].values()}
    created = channels["task.created"]
    assert created["x-tally-stream"] == "TALLY_TASKS"
    assert "estimator" in created["x-tally-consumers"] and "agents" in created["x-tally-publishers"]
    assert channels["quota.reserve"]["x-tally-stream"] is None
    assert channels["run.recorded"]["x-tally-publishers"] == ["tracker"]


def test_event_schemas_carry_the_envelope_and_stay_open_for_readers() -> None:
    schema = json_schemas()["run.finished.json"]
    props = schema["properties"]
    for field in ("event_id", "occurred_at", "schema_version", "workspace", "event_count"):
        assert field in props
    assert props["schema_version"]["maximum"] == 1
    assert props["occurred_at"]["format"] == "date-time"
    assert "additionalProperties" not in json.dumps(schema)


def test_schema_export_writes_the_documents(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schema", "export", str(tmp_path / "contract")])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load((tmp_path / "contract" / "asyncapi.yaml").read_text())
    assert doc["channels"]["task_created"]["address"] == "{namespace}task.created"
    assert (tmp_path / "contract" / "schemas" / "task.created.json").exists()


def test_schema_export_to_an_unwritable_place_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["schema", "export", str(blocker / "sub")])
    assert result.exit_code == 2
    assert "cannot write the contract" in result.output and "Traceback" not in result.output
