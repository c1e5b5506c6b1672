"""Decomposition of tasks into subtasks, and the size signals read from their text."""

from services.estimator.decompose import SubtaskSpec, decompose, extract_features

PLAN = """Add login to the API.

1. Add the /login route
2) Hash passwords with argon2
- [ ] Write the session middleware

Acceptance criteria:
- a wrong password returns 401
- a locked account returns 423

Files:
- api/routes/login.py
- api/auth/hashing.py
"""


def test_given_subtasks_are_used_as_they_are() -> None:
    specs = decompose("Login", PLAN, subtasks=["one", SubtaskSpec("two", "details", "given")])
    assert [(s.title, s.source) for s in specs] == [("one", "given"), ("two", "given")]


def test_numbered_and_checkbox_lines_become_subtasks_but_acceptance_and_files_do_not() -> None:
    titles = [s.title for s in decompose("Login", PLAN)]
    assert titles == [
        "Add the /login route",
        "Hash passwords with argon2",
        "Write the session middleware",
    ]


def test_a_task_without_structure_is_its_own_single_subtask() -> None:
    specs = decompose("Fix typo in README", "The word 'recieve' is misspelt.")
    assert len(specs) == 1
    assert specs[0].title == "Fix typo in README"
    assert specs[0].source == "task"


def test_markdown_headings_also_open_sections() -> None:
    text = "## Steps\n* build it\n## Acceptance\n* it works\n## Files\n* src/app.py\n"
    features = extract_features("Thing", text)
    assert [s.title for s in decompose("Thing", text)] == ["build it"]
    assert features.acceptance_count == 1
    assert features.files == ("src/app.py",)


def test_features_count_files_acceptance_size_words_and_labels() -> None:
    features = extract_features(
        "Refactor and migrate the auth module", PLAN, labels=["Backend", " security "]
    )
    assert features.files_count == 2
    assert features.acceptance_count == 2
    assert {"refactor", "migrate"} <= set(features.size_words)
    assert features.labels == ("backend", "security")
    assert features.subtask_count == 3
    assert features.word_count > 30


def test_stated_size_in_lines_is_read() -> None:
    features = extract_features("Rename config keys", "About ~120 lines across the repo.")
    assert features.estimated_lines == 120
    assert "rename" in features.size_words
