"""PII redaction: phone numbers, ID cards, bank cards and e-mail addresses.

Numbers are only redacted when they validate: an 18-digit ID card must pass the GB 11643-1999
checksum and carry a plausible birth date, a bank card (16–19 digits) must pass the Luhn check, a
mobile number must look like a mainland number (1[3-9] + 9 digits), a landline must carry an
area code. Order numbers and amounts are kept. Each hit becomes a typed placeholder
(``<PHONE>``, ``<ID>``, ``<CARD>``, ``<EMAIL>``) and is counted in the result.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

PLACEHOLDERS = {"phone": "<PHONE>", "id_card": "<ID>", "bank_card": "<CARD>", "email": "<EMAIL>"}

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# a run of digits, optionally split by single spaces or dashes (138-1234-5678, 6222 0212 3456 7890)
_DIGIT_RUN_RE = re.compile(r"(?<!\d)(?:\+?86[ -]?)?\d(?:[ \-]?\d)*[Xx]?(?!\d)")
# ten digits, single separators allowed between them: the fewest any PII has (a landline, after its
# separators are dropped); a text without such a run has no number to classify
_TEN_DIGITS_RE = re.compile(r"\d(?:[ \-]?\d){9}")
_MOBILE_RE = re.compile(r"1[3-9]\d{9}")
_LANDLINE_RE = re.compile(r"0[1-9]\d{1,2}\d{7,8}")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id_card_valid(number: str) -> bool:
    """True if ``number`` is an 18-character mainland ID with a valid checksum and birth date."""
    if len(number) != 18 or not number[:17].isdecimal():  # isdigit() lets "²" through, which int() refuses
        return False
    year, month, day = int(number[6:10]), int(number[10:12]), int(number[12:14])
    if not (1900 <= year <= 2100 and 1 <= month <= 12 and 1 <= day <= 31):
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def luhn_valid(number: str) -> bool:
    """True if the digit string passes the Luhn check."""
    if not number.isdecimal():
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def classify_number(raw: str) -> str | None:
    """Which kind of PII a digit run is (``phone``, ``id_card``, ``bank_card``) or None."""
    digits = re.sub(r"[ \-+]", "", raw)
    if digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    if len(digits) == 18 and id_card_valid(digits):
        return "id_card"
    if not digits.isdecimal():
        return None
    if 16 <= len(digits) <= 19 and luhn_valid(digits):
        return "bank_card"
    if len(digits) == 11 and _MOBILE_RE.fullmatch(digits):
        return "phone"
    if 10 <= len(digits) <= 12 and _LANDLINE_RE.fullmatch(digits) and ("-" in raw or " " in raw
                                                                       or digits[:3] in _BIG_CITY):
        return "phone"
    return None


# area codes of three digits (010, 020–029): landlines written without a dash
_BIG_CITY = {"010", "020", "021", "022", "023", "024", "025", "027", "028", "029"}


@dataclass(frozen=True)
class Redaction:
    """A redacted text and what was found in it."""

    text: str
    found: dict[str, int] = field(default_factory=dict)

    @property
    def has_pii(self) -> bool:
        return bool(self.found)


def redact(text: str) -> Redaction:
    """Replace validated PII in ``text`` with typed placeholders; report the counts by kind."""
    if not text:
        return Redaction(text or "", {})
    if "@" not in text and _TEN_DIGITS_RE.search(text) is None:   # most feedback: nothing to look at
        return Redaction(text, {})
    found: Counter[str] = Counter()

    def _email(m: re.Match[str]) -> str:
        found["email"] += 1
        return PLACEHOLDERS["email"]

    if "@" in text:
        text = _EMAIL_RE.sub(_email, text)

    def _number(m: re.Match[str]) -> str:
        raw = m.group(0)
        out = _number_text(raw, found)
        if out == raw and raw[-1] in "Xx":  # no ID card: the X starts the next word
            out = _number_text(raw[:-1], found) + raw[-1]
        return out

    if _TEN_DIGITS_RE.search(text):   # one C-level scan spares prices and dates a Python call each
        text = _DIGIT_RUN_RE.sub(_number, text)
    return Redaction(text, dict(found))


def _number_text(raw: str, found: Counter[str]) -> str:
    kind = classify_number(raw)
    if kind is None:
        return _redact_inside(raw, found)
    found[kind] += 1
    return PLACEHOLDERS[kind]


def _redact_inside(raw: str, found: Counter[str]) -> str:
    """A run that is not PII as a whole may still hold a mobile number glued to other digits'
    separators (``电话138 1234 5678 9``): check each separator-delimited piece group."""
    parts = re.split(r"([ \-])", raw)  # digits, separator, digits, …
    if len(parts) == 1:
        return raw
    out: list[str] = []
    i = 0
    while i < len(parts):
        # the longest run of whole pieces starting here that validates (``138 1234 5678`` inside
        # ``138 1234 5678 9``); checking single pieces only let a phone split by spaces through.
        # No PII is longer than _MAX_PII_CHARS, which keeps a long run of short pieces linear.
        best: tuple[int, str] | None = None
        j, length = i, 0
        while i % 2 == 0 and j < len(parts) and length + len(parts[j]) <= _MAX_PII_CHARS:
            length += len(parts[j])
            kind = classify_number("".join(parts[i:j + 1])) if _could_be_pii(parts[i:j + 1:2]) else None
            if kind is not None:
                best = (j, kind)
            j += 2
            length += 1  # the separator after the piece
        if best is None:
            out.append(parts[i])
            i += 1
            continue
        found[best[1]] += 1
        out.append(PLACEHOLDERS[best[1]])
        i = best[0] + 1
    return "".join(out)


_MAX_PII_CHARS = 30  # "+86 138 1234 5678", an 18-character ID or a 19-digit card with separators


def _could_be_pii(pieces: list[str]) -> bool:
    """A cheap filter before :func:`classify_number`: the lengths and prefixes PII can have."""
    d = "".join(pieces).lstrip("+")
    n = len(d)
    return (16 <= n <= 19 or (n == 11 and d[0] == "1") or (n == 13 and d.startswith("86"))
            or (10 <= n <= 12 and d[0] == "0"))


def redact_many(texts: list[str]) -> list[Redaction]:
    """Redact a batch of texts."""
    return [redact(t) for t in texts]
