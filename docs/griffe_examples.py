"""A griffe extension for the API reference (mkdocs.yml, ``extensions:``): the package's
docstrings title their doctest section ``Example:`` (Google style, singular); griffe reads
only ``Examples:`` as code examples, so the singular is renamed on load."""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.M)


class ExampleSections(griffe.Extension):
    """``Example:`` sections are read as ``Examples:`` (doctest blocks rendered as code)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
