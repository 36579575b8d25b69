"""Secrets masked in every form they can come back in. Pure: no I/O.

A vendor, a proxy or a library's error message that quotes a key back may write it raw,
JSON-escaped (`\\/`, `\\"`, `\\\\`, `\\u0041`, a surrogate pair), URL-encoded (quote or
quote_plus, hex in either case, even twice: `%252F`), repr-escaped (`\\'`, `\\x41`),
HTML-escaped (`&quot;`, `&#47;`), in another letter case, or cut short.

`mask_secrets` looks for each secret in the text itself and in decoded views of it: backslash
escapes undone (JSON and repr), percent-encoding undone, HTML character references undone, and
all three undone together up to three times over (a JSON text quoted in a JSON text, a form
value encoded twice). Every character of a view remembers the stretch of the original text it
came from, so what is found in a view is masked in the original. Decoding is deterministic and
linear: no backtracking pattern, whatever the text or the secret holds. A space in a secret also
matches `+` (quote_plus).

A cut can leave only a secret's head: FRAGMENT_MIN or more of its leading characters are masked
wherever they stand, and TAIL_MIN or more where a text ends or a `...` marks a cut. Shorter heads
are not: a few characters of a key give little away, and masking every "ab" would make messages
unreadable.

Callers mask what they will show after decoding it and before cutting it short (a cut can
leave a head shorter than FRAGMENT_MIN in the middle of a text). Every redaction in the bridge
goes through here: the log processor (bridge.ops.logs), sink details, reconcile reads, directory
sources. (Not named `secrets`: that is a standard library module.)
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import SecretStr

MASK = "<redacted>"
FRAGMENT_MIN = 6  # a secret's head this long is masked anywhere
TAIL_MIN = 3  # ... and this long at the end of a text or before a `...`
CUT_MARKERS = ("...", "\u2026")
MAX_UNDO = 3  # decoding rounds of the combined view

T = TypeVar("T")

# A view: the decoded text and, for each of its characters, where it starts and ends in the
# original text (None, None: the original text itself).
_View = tuple[str, list[int] | None, list[int] | None]
_Decoded = tuple[str, list[int], list[int]]

_SHORT_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
_HTML_NAMES = {"quot": '"', "amp": "&", "lt": "<", "gt": ">", "apos": "'"}
_BACKSLASH = r"\\(?:u(?P<u>[0-9a-fA-F]{4})|x(?P<x>[0-9a-fA-F]{2})|U(?P<U>[0-9a-fA-F]{8})|(?P<e>.))"
_PERCENT = r"(?P<p>(?:%[0-9a-fA-F]{2})+)"
_HTML = r"&(?:#(?P<d>[0-9]{1,7})|#[xX](?P<h>[0-9a-fA-F]{1,6})|(?P<n>quot|amp|lt|gt|apos));"
_ONE = r"(?P<c>.)"  # a lone `\\`, `%` or `&` that starts no escape


def _tokens(escapes: str, marks: str) -> re.Pattern[str]:
    run = "(?P<r>[^" + re.escape(marks) + "]+)"  # plain text, copied in one go
    return re.compile(f"{run}|{escapes}|{_ONE}", re.DOTALL)


_NUMERIC = (("u", 16), ("x", 16), ("U", 16), ("d", 10), ("h", 16))
_TOKENS = {
    "\\": _tokens(_BACKSLASH, "\\"),
    "%": _tokens(_PERCENT, "%"),
    "&": _tokens(_HTML, "&"),
    "": _tokens(f"{_BACKSLASH}|{_PERCENT}|{_HTML}", "\\%&"),
}


def _code_point(value: int, fallback: str) -> str:
    return chr(value) if value <= 0x10FFFF else fallback


def _utf8(data: bytes) -> list[tuple[str, int]]:
    """(character, bytes it took) for percent-decoded bytes; a byte that is not valid UTF-8
    stands for itself (latin-1), so nothing is lost."""
    out, i = [], 0
    while i < len(data):
        lead = data[i]
        size = 1 if lead < 0x80 else 2 if lead >> 5 == 6 else 3 if lead >> 4 == 14 else 4
        try:
            out.append((data[i : i + size].decode("utf-8"), size))
            i += size
        except UnicodeDecodeError:
            out.append((chr(lead), 1))
            i += 1
    return out


def _decode(text: str, tokens: re.Pattern[str]) -> _Decoded:
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []

    def emit(char: str, start: int, end: int) -> None:
        # a UTF-16 surrogate pair written as two \u escapes is one character
        high = chars[-1] if chars else ""
        if len(high) == 1 and "\ud800" <= high <= "\udbff" and "\udc00" <= char <= "\udfff":
            pair = (ord(high) - 0xD800) * 0x400 + (ord(char) - 0xDC00) + 0x10000
            chars[-1], ends[-1] = chr(pair), end
            return
        chars.append(char)
        starts.append(start)
        ends.append(end)

    for token in tokens.finditer(text):
        start, end, groups = token.start(), token.end(), token.groupdict()
        if groups.get("r") is not None:
            chars.append(groups["r"])  # joined below: one entry per run is enough here
            starts.extend(range(start, end))
            ends.extend(range(start + 1, end + 1))
        elif groups.get("c") is not None:
            emit(groups["c"], start, end)
        elif groups.get("p") is not None:
            position = start
            for char, size in _utf8(bytes.fromhex(groups["p"].replace("%", ""))):
                emit(char, position, position + 3 * size)
                position += 3 * size
        elif groups.get("e") is not None:
            emit(_SHORT_ESCAPES.get(groups["e"], groups["e"]), start, end)
        elif groups.get("n") is not None:
            emit(_HTML_NAMES[groups["n"].lower()], start, end)
        else:
            number = next(
                (int(groups[k], base) for k, base in _NUMERIC if groups.get(k) is not None)
            )
            emit(_code_point(number, token.group()), start, end)
    return "".join(chars), starts, ends


def _views(text: str) -> Iterable[_View]:
    """The text, then each decoded view of it worth looking at. Most texts hold no backslash,
    percent sign or ampersand: then the text itself is all there is, and costs no map."""
    yield text, None, None
    marks = [mark for mark in ("\\", "%", "&") if mark in text]
    if not marks:
        return
    for mark in marks:  # one scheme at a time: a secret may hold another scheme's escape
        yield _decode(text, _TOKENS[mark])
    shown: str = text
    starts: list[int] | None = None
    ends: list[int] | None = None
    for round_ in range(MAX_UNDO):  # all schemes together, again and again
        decoded, new_starts, new_ends = _decode(shown, _TOKENS[""])
        if decoded == shown:
            return
        if starts is not None and ends is not None:  # back to the original text's positions
            new_starts = [starts[i] for i in new_starts]
            new_ends = [ends[i - 1] for i in new_ends]
        shown, starts, ends = decoded, new_starts, new_ends
        if round_ or len(marks) > 1:  # else it is the one-scheme view already given
            yield shown, starts, ends
        if not any(mark in shown for mark in ("\\", "%", "&")):
            return


def _same(shown: str, secret: str) -> bool:
    return shown.lower() == secret or (secret == " " and shown == "+")  # noqa: S105 - a space


def _literal(chars: str) -> str:
    return "".join("[ +]" if c == " " else re.escape(c) for c in chars)


@functools.lru_cache(maxsize=256)
def _patterns(secret: str) -> tuple[re.Pattern[str], re.Pattern[str] | None]:
    """(the secret's first FRAGMENT_MIN characters, all of a shorter secret; its heads of
    TAIL_MIN up to FRAGMENT_MIN - 1 characters where a text is cut), any letter case."""
    head = re.compile(_literal(secret[:FRAGMENT_MIN]), re.IGNORECASE)
    sizes = range(min(len(secret), FRAGMENT_MIN) - 1, TAIL_MIN - 1, -1)  # longest first
    if not sizes:
        return head, None
    heads = "|".join(_literal(secret[:size]) for size in sizes)
    cut = "|".join(re.escape(marker) for marker in CUT_MARKERS)
    return head, re.compile(f"(?:{heads})(?={cut}|\\Z)", re.IGNORECASE)


def _spans(view: _View, secret: str) -> Iterable[tuple[int, int]]:
    """Where the secret, or a head of it, stands in the view (as original text positions)."""
    shown, starts, ends = view
    first = (lambda i: i) if starts is None else starts.__getitem__
    last = (lambda i: i + 1) if ends is None else ends.__getitem__
    head, tail = _patterns(secret)
    lowered = [char.lower() for char in secret]  # one entry per character, whatever lower() does
    position = 0
    while (found := head.search(shown, position)) is not None:
        end, i = found.end(), found.end() - found.start()
        while i < len(secret) and end < len(shown) and _same(shown[end], lowered[i]):
            end, i = end + 1, i + 1  # as much more of the secret as follows
        yield first(found.start()), last(end - 1)
        position = end
    if tail is not None:
        for found in tail.finditer(shown):
            yield first(found.start()), last(found.end() - 1)


_MARKS = re.compile(r"[\\%&]")


@functools.lru_cache(maxsize=64)
def _any_head(secrets: frozenset[str]) -> re.Pattern[str]:
    """Every secret's shortest head that is ever masked, in one pattern."""
    return re.compile("|".join(sorted(_literal(s[:TAIL_MIN]) for s in secrets)), re.IGNORECASE)


def _plain(secret: SecretStr | str) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def mask_secrets(text: str, secrets: Iterable[SecretStr | str], *, mask: str = MASK) -> str:
    """`text` with every secret, in any of its written forms or cut short, replaced by `mask`.

    Call it after decoding and before truncating. Empty secrets are ignored (masking "" would
    put the mask between every character)."""
    values = frozenset(value for secret in secrets if (value := _plain(secret)))
    if not values or not text:
        return text
    if _any_head(values).search(text) is None and not _MARKS.search(text):
        return text  # the common case, in one scan: nothing to decode, nothing found
    spans = sorted(
        span for view in _views(text) for value in values for span in _spans(view, value)
    )
    if not spans:
        return text
    pieces, position = [], 0
    for start, end in spans:
        if end <= position:
            continue  # inside a span already masked
        if start >= position:
            pieces += [text[position:start], mask]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def mask_values(value: T, secrets: Iterable[SecretStr | str], *, mask: str = MASK) -> T:
    """A decoded JSON value with `mask_secrets` applied to every string in it (keys too)."""
    hidden = [s for secret in secrets if (s := _plain(secret))]
    if not hidden:
        return value
    return _walk(value, hidden, mask)  # type: ignore[no-any-return]


def _walk(value: Any, secrets: list[str], mask: str) -> Any:
    if isinstance(value, str):
        return mask_secrets(value, secrets, mask=mask)
    if isinstance(value, dict):
        return {_walk(k, secrets, mask): _walk(v, secrets, mask) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_walk(item, secrets, mask) for item in value)
    return value


def mask_answer(body: bytes, secrets: Iterable[SecretStr | str], *, mask: str = MASK) -> bytes:
    """A vendor's answer with every secret masked, for code that decodes and excerpts it.

    A JSON answer is decoded, masked value by value and encoded again, so it stays the same
    JSON (a mask never eats a quote that closed a string) and what a decoder turns back into a
    secret is masked too. Anything else is masked as text."""
    hidden = [s for secret in secrets if (s := _plain(secret))]
    if not hidden:
        return body
    text = body.decode("utf-8", errors="replace")
    if _any_head(frozenset(hidden)).search(text) is None and not _MARKS.search(text):
        # The usual answer: no head of a secret and no escape a decoder could turn into one,
        # so no value in it needs masking (one scan instead of decoding, walking, encoding).
        return text.encode()
    try:
        answer = json.loads(text)
    except ValueError:
        return mask_secrets(text, hidden, mask=mask).encode()
    masked = mask_values(answer, hidden, mask=mask)
    try:
        return json.dumps(masked, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate (`"\ud800"`) is only JSON when escaped
        return json.dumps(masked).encode()
