"""Render a kustomization the way ``kubectl apply -k`` does, for the fields Tally's use.

The manifest tests render every overlay without a cluster or a kustomize binary: this
covers ``resources`` (files and directories), ``namespace``, ``labels``, ``images``,
``replicas`` and ``patches`` (a strategic-merge patch file, or an inline JSON 6902 patch
with a ``target``). A kustomization using any other field fails the render by name, so
a new feature in the manifests cannot go unchecked.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

#: Fields of a Kustomization this renderer applies.
KNOWN = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
#: Kinds that live outside any namespace (kustomize leaves them alone).
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


class KustomizeError(Exception):
    """The kustomization uses something this renderer (and so the tests) cannot check."""


def load_documents(path: Path) -> list[Resource]:
    """The YAML documents of a file, empty ones dropped."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[Resource]:
    """The resources ``kubectl kustomize directory`` would print."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN
    if unknown:
        raise KustomizeError(f"{directory}: kustomization fields not rendered: {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            resources += render(target)
        elif target.is_file():
            if directory.resolve() not in target.parents:
                raise KustomizeError(f"{directory}: {entry} is a file outside the kustomization")
            resources += load_documents(target)
        else:
            raise KustomizeError(f"{directory}: resource {entry} does not exist")
    for patch in spec.get("patches", []):
        _patch(resources, directory, patch)
    for item in spec.get("labels", []):
        for resource in resources:
            resource.setdefault("metadata", {}).setdefault("labels", {}).update(item["pairs"])
    for replica in spec.get("replicas", []):
        _one(resources, "Deployment", replica["name"], directory)["spec"]["replicas"] = replica[
            "count"
        ]
    for image in spec.get("images", []):
        _set_image(resources, image)
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = spec["namespace"]
    return resources


def _one(resources: list[Resource], kind: str, name: str, where: Path) -> Resource:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    if len(found) != 1:
        raise KustomizeError(f"{where}: {len(found)} resources are {kind}/{name}")
    return found[0]


def _containers(resource: Resource) -> list[dict[str, Any]]:
    spec = resource.get("spec", {})
    if resource["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod = spec.get("template", {}).get("spec", {})
    return [*pod.get("containers", []), *pod.get("initContainers", [])]


def _set_image(resources: list[Resource], image: dict[str, str]) -> None:
    for resource in resources:
        for container in _containers(resource):
            name, _, _ = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"


def _patch(resources: list[Resource], directory: Path, entry: dict[str, Any]) -> None:
    if "path" in entry:
        for patch in load_documents(directory / entry["path"]):
            meta = patch["metadata"]
            merge(_one(resources, patch["kind"], meta["name"], directory), patch)
        return
    target = entry["target"]
    matched = [
        r
        for r in resources
        if r["kind"] == target["kind"]
        and ("name" not in target or r["metadata"]["name"] == target["name"])
    ]
    if not matched:
        raise KustomizeError(f"{directory}: patch target {target} matches nothing")
    for resource in matched:
        for op in yaml.safe_load(entry["patch"]):
            json6902(resource, op)


def merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    """A strategic merge: mappings merge, ``null`` deletes, lists of named items merge by
    name, other lists are replaced."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        elif isinstance(value, list) and _named(value) and _named(into.get(key)):
            by_name = {item["name"]: item for item in into[key]}
            for item in value:
                if item["name"] in by_name:
                    merge(by_name[item["name"]], item)
                else:
                    into[key].append(copy.deepcopy(item))
        else:
            into[key] = copy.deepcopy(value)


def _named(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def json6902(resource: Resource, op: dict[str, Any]) -> None:
    """Apply one JSON 6902 operation (add, replace, remove)."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")]
    node: Any = resource
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if kind == "remove":
        if isinstance(node, list):
            del node[int(last)]
        elif last not in node:
            raise KustomizeError(f"remove {op['path']}: no such field")
        else:
            del node[last]
    elif kind in ("add", "replace"):
        if isinstance(node, list):
            if last == "-":
                node.append(op["value"])
            else:
                node.insert(int(last), op["value"])
        else:
            if kind == "replace" and last not in node:
                raise KustomizeError(f"replace {op['path']}: no such field")
            node[last] = op["value"]
    else:
        raise KustomizeError(f"JSON patch operation {kind!r} is not rendered")
