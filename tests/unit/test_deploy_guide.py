"""docs/deploy.md: the commands of the production guide are the manifests' own (every
path exists, every kustomization it applies is one the manifest tests render, every
resource it waits for is one the manifests make)."""

from __future__ import annotations

import re
import shlex

from tally.settings import REPO_ROOT
from tests.unit.test_k8s_manifests import KUSTOMIZATIONS, rendered

GUIDE = (REPO_ROOT / "docs" / "deploy.md").read_text()
COMMANDS = [
    line.strip()
    for block in re.findall(r"```bash\n(.*?)```", GUIDE, flags=re.S)
    for line in block.splitlines()
    if line.strip()
]


def _words(prefix: str) -> list[list[str]]:
    found = []
    for command in COMMANDS:
        for part in re.split(r"&&|\||\)|\(", command):
            words = shlex.split(part)
            if words[: len(prefix.split())] == prefix.split():
                found.append(words)
    return found


def test_the_guide_applies_every_kustomization_and_only_those() -> None:
    applied = {w[w.index("-k") + 1] for w in _words("kubectl apply -k")}
    assert applied == {f"deploy/k8s/{d}" for d in KUSTOMIZATIONS if "small" not in d}


def test_every_file_the_guide_names_exists() -> None:
    named = re.findall(r"(?<![\w/.])((?:deploy|docs|tests)/[\w./-]+)", GUIDE)
    assert named
    for path in named:
        assert (REPO_ROOT / path.rstrip(".")).exists(), path
    for words in _words("kubectl"):
        for word in words:
            if word.startswith("--from-file="):
                source = word.split("=")[-1]
                assert (REPO_ROOT / source).exists(), word


def test_the_image_is_set_in_both_kustomizations_of_the_overlay() -> None:
    edits = [w for w in _words("kustomize edit set image")]
    for release in ("0.1.0", "0.2.0"):
        images = {w[-1] for w in edits if w[-1].endswith(release)}
        assert len(images) == 1
    for cd in _words("cd"):
        assert (REPO_ROOT / cd[1] / "kustomization.yaml").exists(), cd
    dirs = {cd[1] for cd in _words("cd")}
    assert dirs == {"deploy/k8s/overlays/production", "deploy/k8s/overlays/production/migrate"}
    for directory in dirs:
        text = (REPO_ROOT / directory / "kustomization.yaml").read_text()
        assert "- name: tally\n" in text


def test_what_the_guide_waits_for_is_made_by_the_manifests() -> None:
    made = {
        f"{r['kind'].lower()}/{r['metadata']['name']}"
        for directory in KUSTOMIZATIONS
        for r in rendered(directory)
    }
    waited = [
        w for w in COMMANDS if re.search(r"kubectl -n tally (wait|rollout status|delete job)", w)
    ]
    assert waited
    for command in waited:
        target = re.search(r"\b(cluster|job|deployment|statefulset)[/ ]([\w-]+)", command)
        assert target, command
        kind, name = target.groups()
        if kind == "statefulset":  # made by the NATS and Redis charts, named by release
            assert name in ("nats", "redis-cluster")
            continue
        assert f"{kind}/{name}" in made, command
    for name in re.findall(r"deployment/(tally-\w+)", GUIDE):
        assert f"deployment/{name}" in made, name
