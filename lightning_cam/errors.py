"""Error messages shared by the library and the tools."""

from __future__ import annotations

__all__ = ["one_line"]


def one_line(err: BaseException) -> str:
    """The error's message on one line (its type name when it has none).

    Example:
        >>> one_line(ValueError("bad\\n  value")), one_line(KeyboardInterrupt())
        ('bad value', 'KeyboardInterrupt')
    """
    text = " ".join(str(err).split())
    return text if text else type(err).__name__
