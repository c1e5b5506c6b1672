"""Turn a CustomResourceDefinition into the JSON Schema the manifest tests validate with.

The Kubernetes schemas come with ``kubernetes-validate``; the operators' custom resources
(KEDA's ``ScaledObject``, CloudNativePG's ``Cluster``) are validated against their CRDs'
``openAPIV3Schema``, kept here without descriptions (the bulk of a CRD) so the tests run
offline. To follow a newer operator release:

    python -m tests.k8s.crd_schema keda.sh_scaledobjects.yaml v2.20.2 \
        > tests/k8s/schemas/keda.sh-v1alpha1-scaledobject.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

#: OpenAPI extensions a JSON Schema validator does not know; dropped with descriptions.
_DROP = {"description", "example"}


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _strip(v)
            for k, v in node.items()
            # A text under "description" is prose; a mapping there is a field of that name.
            if not (k in _DROP and isinstance(v, str))
            and not (k.startswith("x-kubernetes-") and k != "x-kubernetes-int-or-string")
        }
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _int_or_string(node: Any) -> Any:
    """``x-kubernetes-int-or-string`` in JSON Schema terms."""
    if isinstance(node, dict):
        node = {k: _int_or_string(v) for k, v in node.items()}
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("anyOf", None)
            node["type"] = ["integer", "string"]
        return node
    if isinstance(node, list):
        return [_int_or_string(v) for v in node]
    return node


def _closed(node: Any) -> Any:
    """Refuse unknown fields, as ``kubectl apply --validate=strict`` does: the API server
    would silently prune them, so a misspelt field would do nothing."""
    if isinstance(node, dict):
        node = {k: _closed(v) for k, v in node.items()}
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_closed(v) for v in node]
    return node


def crd_schema(crd: dict[str, Any], version: str, source: str) -> dict[str, Any]:
    """The JSON Schema of ``version`` of a CRD: unknown fields refused, descriptions dropped."""
    served = {v["name"]: v for v in crd["spec"]["versions"]}
    schema = _int_or_string(_strip(_closed(served[version]["schema"]["openAPIV3Schema"])))
    return {
        "$comment": f"openAPIV3Schema of {crd['metadata']['name']} {version}, from {source}",
        **schema,
    }


def main() -> None:
    path, release = Path(sys.argv[1]), sys.argv[2]
    crd = yaml.safe_load(path.read_text())
    version = crd["spec"]["versions"][0]["name"]
    json.dump(crd_schema(crd, version, f"{path.name} at {release}"), sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
