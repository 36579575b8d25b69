"""Rejected payloads: what could not become an event, kept for an operator to inspect."""

from __future__ import annotations

import sqlite3

from bridge.store.records import Rejection, Stored, utc_text


def insert_rejection(conn: sqlite3.Connection, item: Rejection) -> Stored:
    conn.execute(
        "INSERT INTO rejected (received_at, topic, format, payload, payload_size, reason)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            utc_text(item.received_at),
            item.topic,
            item.format,
            item.payload[:65536],  # more than the 16 KiB limit, enough to inspect
            len(item.payload),
            item.reason,
        ),
    )
    return Stored(key="", status="rejected", terminal=item.terminal, reason=item.reason)
