"""The documentation explains the repository from inside it: every link and every repository path the
README and docs/ name exists, every anchor a link names is a heading there, the configuration page is the
schema's own rendering, and no file points at a specification outside the repository."""

import re
from pathlib import Path

import yaml

from crosscoder_interventions.config_reference import DEFAULT_CONFIG, SCHEMA, render

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
# What a run or an install writes: named in the docs as outputs, never in the repository itself.
GENERATED = ("results/", ".venv", ".snakemake/", "resources/")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
TOP_LEVEL = ("Snakefile", "config.yaml", "Makefile", "pyproject.toml", "envs/", "workflow/", "tests/", "docs/", ".ci/", "profiles/", "CHANGELOG.md",
             "README.md")
SKIPPED_DIRS = {".git", ".venv", ".venv-lower", "results", ".snakemake", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__", ".whl"}


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [first or second for first, second in LINK.findall(text)]


def test_anchor_follows_github():
    assert anchor("3. Interventions on feature i") == "3-interventions-on-feature-i"
    assert anchor("8. The sprint's findings") == "8-the-sprints-findings"
    assert anchor("`discovery`") == "discovery"


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        for target in links(page):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert PAGES[0].exists() and not broken, broken


def test_every_repository_path_named_exists():
    """Paths in backticks that start at the repository's top level; globs must match something."""
    missing = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for code in CODE.findall(text):
            for word in code.split():
                word = word.rstrip(".,:;)").lstrip("(")
                if not word.startswith(TOP_LEVEL) or word.startswith(GENERATED) or re.search(r"[<{$]", word):
                    continue
                if not (any(REPO.glob(word)) if "*" in word else (REPO / word).exists()):
                    missing.append(f"{page.name}: {word}")
    assert not missing, missing


def test_configuration_page_is_the_schemas_rendering():
    rendered = render(yaml.safe_load(SCHEMA.read_text()), yaml.safe_load(DEFAULT_CONFIG.read_text()))
    assert (REPO / "docs" / "configuration.md").read_text() == rendered, (
        "docs/configuration.md is out of date: .venv/bin/python -m crosscoder_interventions.config_reference > docs/configuration.md"
    )


def test_every_schema_key_says_what_it_does():
    rendered = render(yaml.safe_load(SCHEMA.read_text()), yaml.safe_load(DEFAULT_CONFIG.read_text()))
    undescribed = [line.split("|")[1].strip() for line in rendered.splitlines() if line.startswith("| `") and line.rstrip().endswith("|  |")]
    assert not undescribed, undescribed


def test_no_file_points_outside_the_repository():
    """The specification is docs/design.md: nothing names the files it replaced."""
    outside = ("DESIGN" + ".md", "../" + "shared", "shared" + "/DESIGN")
    found = []
    for path in REPO.rglob("*"):
        if not path.is_file() or SKIPPED_DIRS & set(path.relative_to(REPO).parts) or path.suffix in {".png", ".parquet", ".pt", ".pyc"}:
            continue
        text = path.read_text(errors="ignore")
        found += [f"{path.relative_to(REPO)}: {name}" for name in outside if name in text]
    assert not found, found
