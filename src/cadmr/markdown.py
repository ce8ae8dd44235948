"""The Markdown table writer every report uses (run results, grid searches, experiment
summaries, the leakage audit).

Written by hand rather than with ``tabulate``: our tables are read in terminals and
diffed and grepped in run folders, where unpadded ``| a | b |`` rows stay stable as
values change width; that is all this does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: the header, the separator, one line per row (cells via ``str``)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"
