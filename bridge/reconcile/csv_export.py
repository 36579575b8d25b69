"""CSV files the bridge writes for people to open in a spreadsheet (the payroll export).

Every CSV writer in the bridge goes through `write_csv`, so none can forget the two rules:
a text cell that a spreadsheet would run as a formula is neutralised (OWASP "CSV injection"),
and the file is created readable by the bridge's user only (it holds names and hours).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

# A cell starting with one of these is a formula (or becomes one) in Excel, LibreOffice Calc
# and Google Sheets: OWASP's list (= + - @ tab CR), and LF, which Calc also skips before a
# formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def safe_cell(value: object) -> object:
    """A cell as it is safe to write: text that starts like a formula gets a leading single
    quote (OWASP's rule), which spreadsheets read as "this is text" and do not show.

    Only text is neutralised. OWASP would quote every cell starting with `-`, but a number the
    bridge computed itself (a count, -5 in a difference column) cannot carry a formula, and
    quoting it would turn it into text that payroll cannot add up. Untrusted values (person
    ids, names, vendor replies) always reach this function as text."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write `header` and `rows` to `path`, every cell through `safe_cell`. A new file is
    created 0600 whatever the umask; an existing file is overwritten and keeps its mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([safe_cell(cell) for cell in header])
        writer.writerows([safe_cell(cell) for cell in row] for row in rows)
