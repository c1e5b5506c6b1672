"""The reporter's OpenAPI document is valid OpenAPI 3.1 and describes every error alike."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from services.reporter.app import create_app
from services.reporter.settings import ReporterSettings


def document() -> dict[str, Any]:
    # Building the app connects to nothing: the document needs no server.
    app = create_app(ReporterSettings())
    spec: dict[str, Any] = app.api.openapi()  # type: ignore[attr-defined]
    return spec


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = document()
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_operation_documents_its_errors_in_the_one_shape() -> None:
    spec = document()
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            for status in ("400", "404", "422", "500"):
                content = op["responses"][status]["content"]["application/json"]
                assert content["schema"] == error, (method, path, status)
            ok = [s for s in op["responses"] if s.startswith("2")]
            assert ok, (method, path)
