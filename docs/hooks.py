"""mkdocs hooks of the lightning-cam site (``hooks:`` in mkdocs.yml).

``<!-- methods-table -->`` on a page becomes the table of every registered method, read from
:data:`lightning_cam.methods.METHODS` when the site is built: the registry is the one list of
methods, and the site cannot fall behind it.
"""

from __future__ import annotations

import logging
from typing import Any

MARKER = "<!-- methods-table -->"


class _DynamicAll(logging.Filter):
    """Drops griffe's one warning about ``*CAM_CLASSES`` in ``lightning_cam.__all__``: the
    classes are generated from the registry at import (documented on the methods page), which
    static analysis cannot follow. Every other warning still fails ``--strict``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Unsupported item in lightning_cam.__all__: CAM_CLASSES" not in record.getMessage()


def on_startup(**kwargs: Any) -> None:
    """Install the filter on griffe's logger (mkdocstrings routes it to mkdocs.plugins.griffe)."""
    logging.getLogger("mkdocs.plugins.griffe").addFilter(_DynamicAll())


def methods_table() -> str:
    """The Markdown table of :data:`lightning_cam.methods.METHODS`: a row per method (name,
    class, kind, whether it explains classes only, the paper, its computation's reference)."""
    from lightning_cam.methods import METHODS

    rows = [
        "| name | class | kind | targets | paper | computation (formula in its docstring) |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in METHODS.items():
        compute = f"{m.compute.__module__}.{m.compute.__qualname__}"
        aliases = ", ".join(f"`{a}`" for a in m.aliases)
        cell = f"`{name}`" + (f" ({aliases})" if aliases else "")
        targets = "classes only" if m.needs_class_target else "any score"
        rows.append(
            f"| {cell} | `{m.class_name}` | {m.kind} | {targets} | {m.paper} "
            f"| [`{m.compute.__qualname__}`][{compute}] |"
        )
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Fill the generated parts of a page."""
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, methods_table())
    return markdown
