"""The one table format of the operator commands: aligned columns, numbers to the right."""

from __future__ import annotations

from collections.abc import Sequence


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return " ".join(str(value).split())  # a multi-line error stays on its row


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Headers and rows as aligned text; int and float cells are right-aligned. A header
    or cell never holds a line break, so `line.split()` reads a row back (tests do)."""
    texts = [[cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in texts:
        for n, text in enumerate(row):
            widths[n] = max(widths[n], len(text))
    numeric = [
        bool(rows) and all(isinstance(row[n], int | float) or row[n] is None for row in rows)
        for n in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(widths[n]) if numeric[n] else value.ljust(widths[n])
            for n, value in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in texts)])
