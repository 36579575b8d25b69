"""The bridge's own JSON format, for terminals we configure or write ourselves.

    {"id": "gate1-000123", "badge": "04A1B2C3", "action": "in",
     "time": "2026-11-22T08:00:05+01:00"}

`badge` or `user` is required; everything else is optional and unknown keys are ignored, so a
terminal may send more than we read.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from bridge.events import (
    Action,
    ClockEvent,
    PayloadError,
    derived_key,
    json_kind,
    normalise_badge,
    parse_time,
    show,
    wall_clock_warning,
)

if TYPE_CHECKING:
    from datetime import datetime
    from zoneinfo import ZoneInfo

MAX_TEXT_CHARS = 128
MAX_NOTE_CHARS = 500
_ACTIONS = ", ".join(Action)
_ACTION_VALUES = frozenset(Action)  # `str in Action` is a TypeError before Python 3.12


def _text(value: object) -> str | None:
    """An id, user, job or terminal: a string or an integer, kept as a trimmed string."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        msg = f"must be a string or an integer, not a JSON {json_kind(value)}"
        raise ValueError(msg)  # noqa: TRY004 - pydantic reports a ValueError as this field's problem
    if not text:
        msg = "must not be empty"
    elif len(text) > MAX_TEXT_CHARS:
        msg = f"longer than {MAX_TEXT_CHARS} characters"
    elif not text.isprintable():
        msg = "has non-printable characters"
    else:
        return text
    raise ValueError(msg)


def _note(value: object) -> str | None:
    """Free text for a person to read: line breaks and tabs allowed, no other control, format
    or bidi characters (they would reach the vendor and the operator's terminal)."""
    if value is None:
        return None
    if not isinstance(value, str):
        msg = f"must be a string, not a JSON {json_kind(value)}"
        raise ValueError(msg)  # noqa: TRY004 - as above: a ValueError for pydantic
    if len(value) > MAX_NOTE_CHARS:
        msg = f"longer than {MAX_NOTE_CHARS} characters"
        raise ValueError(msg)
    if not value.replace("\n", " ").replace("\t", " ").isprintable():
        msg = "has control or invisible characters"
        raise ValueError(msg)
    return value


def _badge(value: object) -> str | None:
    return None if value is None else normalise_badge(value)


def _action(value: object) -> Action | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in _ACTION_VALUES:
        return Action(value.strip().lower())
    msg = f"must be one of {_ACTIONS}, not {show(value)}"
    raise ValueError(msg)


Text = Annotated[str | None, BeforeValidator(_text)]


class CanonicalPayload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Text = None
    badge: Annotated[str | None, BeforeValidator(_badge)] = None
    user: Text = None
    action: Annotated[Action | None, BeforeValidator(_action)] = None
    time: Annotated[str | None, Field(strict=True)] = None
    job: Text = None
    lat: Annotated[float | None, Field(strict=True, ge=-90, le=90, allow_inf_nan=False)] = None
    lon: Annotated[float | None, Field(strict=True, ge=-180, le=180, allow_inf_nan=False)] = None
    note: Annotated[str | None, BeforeValidator(_note)] = None
    terminal: Text = None

    @model_validator(mode="after")
    def _someone_swiped(self) -> CanonicalPayload:
        if self.badge is None and self.user is None:
            msg = "needs 'badge' or 'user'"
            raise ValueError(msg)
        return self


def parse(
    data: dict[str, Any],
    *,
    terminal: str,
    site_tz: ZoneInfo,
    received_at: datetime,
) -> ClockEvent:
    try:
        payload = CanonicalPayload.model_validate(data)
    except ValidationError as err:
        raise PayloadError(_reason(err)) from None
    if payload.time is None:
        when, given = received_at, False
    else:
        try:
            when, given = parse_time(payload.time, site_tz), True
        except PayloadError as err:
            msg = f"time: {err}"
            raise PayloadError(msg) from None
    event = ClockEvent(
        key="",
        terminal=payload.terminal or terminal,
        badge=payload.badge,
        user=payload.user,
        action=payload.action,
        time=when,
        time_given=given,
        time_warning=wall_clock_warning(payload.time, site_tz) if payload.time else None,
        job=payload.job,
        lat=payload.lat,
        lon=payload.lon,
        note=payload.note,
    )
    if payload.id is None:
        return dataclasses.replace(event, key=derived_key(event))
    key = f"{event.terminal}/{payload.id}"
    return dataclasses.replace(event, key=key, source_id=payload.id)


def _reason(err: ValidationError) -> str:
    """pydantic's report → "action: must be one of in, out, ..." (at most three problems)."""
    parts = []
    for problem in err.errors(include_url=False)[:3]:
        field = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "value_error":  # our own validators: keep their words
            text = str(problem["ctx"]["error"])
        else:
            text = problem["msg"][:1].lower() + problem["msg"][1:]
        parts.append(f"{field}: {text}" if field else text)
    return "; ".join(parts)
