"""The table ``validate(verbose=True)``/``test(verbose=True)`` print, laid out as Lightning's: a
``<Stage> metric`` column with the metric names (sorted, without their ``/dataloader_idx_N``
suffix) and one ``DataLoader N`` column per loader, values as Python prints them, a blank where a
loader did not log a metric. Plain text (no rich), as wide as its columns; more loaders than fit the
terminal are split into several tables."""

from __future__ import annotations

import re
import shutil

_SUFFIX = re.compile(r"/dataloader_idx_\d+$")


def print_results(stage: str, results: list[dict[str, float]]) -> None:
    """Print ``results`` (one dict per loader, as ``validate``/``test`` return them); nothing when empty."""
    per_loader = [{_SUFFIX.sub("", k): v for k, v in r.items()} for r in results]
    names = sorted({k for r in per_loader for k in r})
    if not names:
        return
    headers = [f"DataLoader {i}" for i in range(len(per_loader))]
    cells = [[str(r[name]) if name in r else "" for r in per_loader] for name in names]
    first = f"{stage} metric".capitalize()
    width = max(25, len(first), *(len(n) for n in names), *(len(h) for h in headers), *(len(c) for row in cells for c in row))
    columns = shutil.get_terminal_size(fallback=(120, 30)).columns or 120
    per_table = max(1, columns // width - 1)
    for start in range(0, len(headers), per_table):
        part = slice(start, start + per_table)
        _print_table([first, *headers[part]], [[n, *row[part]] for n, row in zip(names, cells)], width)


def _print_table(header: list[str], rows: list[list[str]], width: int) -> None:
    bar = "─" * (width * len(header))
    line = lambda values: "".join(v.center(width) for v in values).rstrip()  # noqa: E731
    print("\n".join([bar, line(header), bar, *(line(r) for r in rows), bar]))
