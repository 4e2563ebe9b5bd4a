"""The documentation site: every ```python block of docs/ runs, the generated parts are right.

A page's blocks run in order in one namespace (a later block may use an earlier one's names),
from the repository root, offline, as a reader would paste them. ``make test`` also builds the
site with ``mkdocs build --strict`` (broken links, references and includes fail).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def _blocks(page: Path) -> list[tuple[int, str]]:
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in BLOCK.finditer(text)]


PAGES = sorted(p for p in DOCS.rglob("*.md") if _blocks(p))


def _hooks() -> Any:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pages_have_code() -> None:
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert {"python-api.md", "methods.md", "callbacks.md", "detection.md", "transformers.md",
            "dataset-audit.md", "metrics.md", "index.md"} <= names, names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_code_runs(page: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(ROOT)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for line, code in _blocks(page):
        exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)  # noqa: S102


def test_methods_table_is_the_registry() -> None:
    from lightning_cam.methods import METHODS

    assert _hooks().MARKER in (DOCS / "methods.md").read_text()
    table = _hooks().methods_table().splitlines()
    assert len(table) == 2 + len(METHODS)
    for row, (name, m) in zip(table[2:], METHODS.items(), strict=True):
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[0].startswith(f"`{name}`") and cells[1:3] == [f"`{m.class_name}`", m.kind]
        assert cells[3] == ("classes only" if m.needs_class_target else "any score")
        assert f"][{m.compute.__module__}.{m.compute.__qualname__}]" in cells[5]
    rendered = _hooks().on_page_markdown("a\n<!-- methods-table -->\nb")
    assert rendered == "a\n" + "\n".join(table) + "\nb"


def test_readme_is_a_landing_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "make demo" in readme and "make test" in readme and "pip install" in readme
    for link in re.findall(r"\]\((docs/[^)#]+|benchmarks/[^)#]+|[A-Z]+\.md)", readme):
        assert (ROOT / link).is_file(), link  # every link into the site resolves
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, flags=re.M)  # CI runs the README's test command


def test_stub_pages_are_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in ("detection-yolo", "detection-detr", "inputs-nd", "nd-pictures",
                 "metrics-faithfulness", "attributions", "report"):
        assert (DOCS / f"{page}.md").is_file() and f": {page}.md" in nav, page
