"""Keep a paper README's results section equal to what its script measures.

A script renders its results as Markdown and calls :func:`publish`, which
replaces the text between ``<!-- results:begin -->`` and
``<!-- results:end -->`` in the README, or, with ``check=True``, only
reports whether the README already says exactly that.
"""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"


def publish(readme: Path, markdown: str, check: bool) -> bool:
    """Write (or with ``check``, compare) the results section; True when they agree."""
    text = readme.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    updated = f"{head}{BEGIN}\n{markdown.strip()}\n{END}{tail}"
    if check:
        return updated == text
    readme.write_text(updated)
    return True
