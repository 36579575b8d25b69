"""A reconciliation report as a table, as JSON, and as CSV for payroll (one row per person
and day). Pure: no I/O except writing the CSV file it is given."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.commands.table import format_table
from bridge.reconcile.compare import Finding, Kind
from bridge.reconcile.csv_export import write_csv as write_safe_csv
from bridge.reconcile.run import Report

KINDS = (Kind.MISSING, Kind.EXTRA, Kind.DIFFERENT)
CSV_COLUMNS = ("source", "person", "day", "matched", "missing", "extra", "different", "details")


def person_days(report: Report) -> list[dict[str, Any]]:
    """Per person and day: matched and each kind of finding, with the findings' details."""
    days: dict[tuple[str, str], dict[str, Any]] = {}

    def row(person: str, day: str) -> dict[str, Any]:
        return days.setdefault(
            (person, day),
            {
                "person": person,
                "day": day,
                "matched": 0,
                **{k.value: 0 for k in KINDS},
                "findings": [],
            },
        )

    for (person, day), count in report.comparison.matched.items():
        row(person, day)["matched"] += count
    for finding in report.comparison.findings:
        entry = row(finding.person, finding.day)
        entry[finding.kind.value] += 1
        entry["findings"].append(finding)
    return [days[key] for key in sorted(days)]


def describe(finding: Finding) -> str:
    if finding.kind is Kind.MISSING:
        return f"missing at the vendor: {finding.bridge}"
    if finding.kind is Kind.EXTRA:
        return f"at the vendor only: {finding.vendor}"
    return f"different: bridge {finding.bridge}, vendor {finding.vendor}"


def totals(report: Report) -> dict[str, int]:
    return {"matched": report.matched, **{k.value: report.count(k) for k in KINDS}}


def to_json(report: Report) -> dict[str, Any]:
    return {
        "source": report.source,
        "from": report.window.first.isoformat(),
        "to": report.window.last.isoformat(),
        "timezone": report.window.tz.key,
        "chunks": report.chunks,
        "ok": report.ok,
        "totals": totals(report),
        "findings": [
            {
                "kind": f.kind.value,
                "person": f.person,
                "day": f.day,
                "bridge": f.bridge,
                "vendor": f.vendor,
                "ids": list(f.delivery_ids),
            }
            for f in report.comparison.findings
        ],
        "person_days": [
            {k: v for k, v in row.items() if k != "findings"} for row in person_days(report)
        ],
        "requeued": report.requeued,
        "not_requeued": {str(k): v for k, v in sorted(report.not_requeued.items())},
        "notes": report.notes,
    }


def format_text(report: Report) -> str:
    """The person-days that do not match, their findings, and a summary line."""
    rows = [r for r in person_days(report) if any(r[k.value] for k in KINDS)]
    lines = []
    if rows:
        lines.append(
            format_table(
                ["person", "day", "matched", "missing", "extra", "different"],
                [[r["person"], r["day"], r["matched"], *(r[k.value] for k in KINDS)] for r in rows],
            )
        )
        lines.append("")
        for r in rows:
            lines += [f"{r['person']} {r['day']}: {describe(f)}" for f in r["findings"]]
        lines.append("")
    t = totals(report)
    lines.append(
        f"{report.source} {report.window.first}..{report.window.last} ({report.window.tz.key}):"
        f" {t['matched']} match, {t['missing']} missing at the vendor,"
        f" {t['extra']} only at the vendor, {t['different']} different"
    )
    if report.requeued or report.not_requeued:
        lines.append(f"requeued {len(report.requeued)} missing punches")
        lines += [
            f"delivery {k}: is {v}, not delivered; left as it was"
            for k, v in sorted(report.not_requeued.items())
        ]
    lines += report.notes
    return "\n".join(lines)


def write_csv(reports: Sequence[Report], path: Path) -> None:
    """One row per source, person and day (every day seen, matched or not); formula-like text
    neutralised and a new file private (bridge.reconcile.csv_export)."""
    write_safe_csv(
        path,
        CSV_COLUMNS,
        (
            [
                report.source,
                r["person"],
                r["day"],
                r["matched"],
                *(r[k.value] for k in KINDS),
                "; ".join(describe(f) for f in r["findings"]),
            ]
            for report in reports
            for r in person_days(report)
        ),
    )
