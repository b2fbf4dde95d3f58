"""Markdown tables: the one writer of the tables in metrics.md and results.md."""
from __future__ import annotations

from typing import Iterable, Sequence


def markdown_table(header: Sequence, rows: Iterable[Sequence], align: str = "") -> str:
  """A GitHub markdown table: the header line, the rule, one line per row.

  header: [N] column titles; rows: [R][N] cells (each written with `str`);
  align: "" (every column plain `---`) or one letter per column, "l" (`---`)
  or "r" (`---:`). Returns the R + 2 lines joined by newlines, with no final
  newline. A row of another width than the header is a bug: ValueError.
  """
  n = len(header)

  def line(cells) -> str:
    cells = list(cells)
    if len(cells) != n:
      raise ValueError(f"a markdown row of {len(cells)} cells under {n} columns: {cells}")
    return "| " + " | ".join(map(str, cells)) + " |"

  align = align or "l" * n
  if len(align) != n:
    raise ValueError(f"align {align!r} for {n} columns")
  rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
  return "\n".join([line(header), rule, *map(line, rows)])
