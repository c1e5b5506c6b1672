"""Split a task into subtasks and read the size signals its text carries.

A task brings its own subtasks, or its description has structure (bullets, numbered steps,
checkboxes) that names them; failing both, the task is its own single subtask. The
"Acceptance" and "Files" sections are not work items: acceptance criteria count as a size
signal and listed files as the estimated number of files touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

#: Words whose presence says something about how big a task is; the points model learns
#: from history how much each one moves the estimate, the cold-start priors guess it.
SIZE_WORDS: tuple[str, ...] = (
    "typo",
    "rename",
    "bump",
    "docs",
    "tweak",
    "fix",
    "add",
    "refactor",
    "migrate",
    "migration",
    "redesign",
    "rewrite",
    "implement",
    "integrate",
    "performance",
)

_ITEM = re.compile(r"^\s*(?:[-*+]\s+(?:\[[ xX]\]\s*)?|\d{1,3}[.)]\s+)(?P<text>\S.*)$")
# A heading is marked (``## Files``, ``h3. Files``, ``**Files**``) or ends with a colon.
_HEADING = re.compile(
    r"^\s*(?:(?:#{1,6}|h[1-6]\.)\s*(?P<marked>[A-Za-z][\w ]{0,40}?)\s*:?"
    r"|\*\*(?P<bold>[A-Za-z][\w ]{0,40}?):?\*\*:?"
    r"|(?P<colon>[A-Za-z][\w ]{0,40}?):)\s*$"
)
_FILE_LIKE = re.compile(r"[\w./-]+\.[A-Za-z0-9]{1,6}\b|[\w-]+/[\w./-]+")
_LINES_HINT = re.compile(r"~?\s*(\d{1,6})\s*(?:loc|lines?)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9_]+")

Section = Literal["body", "acceptance", "files"]


@dataclass(frozen=True)
class SubtaskSpec:
    """One unit of work inside a task.

    Attributes:
        title: Short name of the subtask.
        description: Extra text, empty when the subtask came from a one-line bullet.
        source: Where it came from: ``given`` by the caller, parsed from the
            ``description``, or the ``task`` itself when nothing else was found.
    """

    title: str
    description: str = ""
    source: Literal["given", "description", "task"] = "description"


@dataclass(frozen=True)
class TaskFeatures:
    """Size signals read from a task's text and metadata."""

    word_count: int
    size_words: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    acceptance_count: int = 0
    labels: tuple[str, ...] = ()
    task_type: str | None = None
    #: Lines of change the author announced ("~200 lines"), None when not stated.
    estimated_lines: int | None = None
    subtask_count: int = 1

    @property
    def files_count(self) -> int:
        """Estimated number of files touched (the files the task lists)."""
        return len(self.files)


@dataclass
class _Parsed:
    items: list[str] = field(default_factory=list)
    acceptance: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _section_of(line: str) -> Section | None:
    """Return the section a heading line opens, or None when the line is no heading."""
    match = _HEADING.match(line)
    if not match or _ITEM.match(line):
        return None
    name = (match.group("marked") or match.group("bold") or match.group("colon")).strip().lower()
    if name.startswith("acceptance") or name in {"done when", "definition of done"}:
        return "acceptance"
    if name in {"files", "files touched", "affected files", "files to change"}:
        return "files"
    # Any other heading ends the special sections; its bullets are work again.
    return "body"


def _parse(description: str) -> _Parsed:
    parsed = _Parsed()
    section: Section = "body"
    for line in description.splitlines():
        if not line.strip():
            continue
        item = _ITEM.match(line)
        if item is None:
            heading = _section_of(line)
            if heading is not None:
                section = heading
            elif section == "files":
                parsed.files.extend(_FILE_LIKE.findall(line))
            continue
        text = item.group("text").strip()
        if section == "acceptance":
            parsed.acceptance.append(text)
        elif section == "files":
            found = _FILE_LIKE.findall(text)
            parsed.files.extend(found or [text])
        else:
            parsed.items.append(text)
    return parsed


def decompose(
    title: str, description: str = "", subtasks: Sequence[str | SubtaskSpec] | None = None
) -> list[SubtaskSpec]:
    """Return the subtasks of a task: the given ones, the description's items, or the task.

    Args:
        title: The task's title; names the single subtask when nothing else does.
        description: Free text, possibly with bullets, numbered steps or checkboxes.
        subtasks: Subtasks the caller already knows (titles or specs); used as they are.

    Example:
        >>> [s.title for s in decompose("Login", "- add form\\n- add route")]
        ['add form', 'add route']
    """
    if subtasks:
        return [
            s if isinstance(s, SubtaskSpec) else SubtaskSpec(title=s, source="given")
            for s in subtasks
        ]
    items = _parse(description or "").items
    if items:
        return [SubtaskSpec(title=text) for text in items]
    return [SubtaskSpec(title=title, description=description or "", source="task")]


def words(text: str) -> list[str]:
    """Lower-case word tokens of a text (letters, digits and underscores)."""
    return [w.lower() for w in _WORD.findall(text)]


def extract_features(
    title: str,
    description: str = "",
    labels: Iterable[str] = (),
    task_type: str | None = None,
    subtasks: Sequence[str | SubtaskSpec] | None = None,
) -> TaskFeatures:
    """Read the size signals of a task: words, size words, files, acceptance criteria."""
    description = description or ""
    parsed = _parse(description)
    tokens = words(f"{title} {description}")
    present = set(tokens)
    lines = [int(m) for m in _LINES_HINT.findall(description)]
    return TaskFeatures(
        word_count=len(tokens),
        size_words=tuple(w for w in SIZE_WORDS if w in present),
        files=tuple(dict.fromkeys(parsed.files)),
        acceptance_count=len(parsed.acceptance),
        labels=tuple(sorted({label.strip().lower() for label in labels if label.strip()})),
        task_type=task_type.lower() if task_type else None,
        estimated_lines=sum(lines) if lines else None,
        subtask_count=len(decompose(title, description, subtasks)),
    )
