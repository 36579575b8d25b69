"""What the vendors' reply rules share: the outcome an HTTP status alone decides, short details."""

from __future__ import annotations

from bridge.delivery import Result
from bridge.http import parse_retry_after

DETAIL_MAX = 300


def short(text: str, limit: int = DETAIL_MAX) -> str:
    """One line of at most `limit` characters (whitespace runs become one space)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify_http_status(status: int, retry_after: str | None = None) -> Result | None:
    """The outcome an HTTP status alone decides, or None when the body must be read."""
    if status == 429:
        return Result.retry("HTTP 429 Too Many Requests", parse_retry_after(retry_after))
    if status >= 500:
        return Result.retry(f"HTTP {status}")
    return None


EXCERPT_MAX = 120


def excerpt(body: bytes, limit: int = EXCERPT_MAX) -> str:
    """A (masked) answer as one short line, "(empty)" when there is nothing to show."""
    return short(body[: limit * 4].decode("utf-8", errors="replace"), limit) or "(empty)"
