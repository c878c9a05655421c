"""Normalize raw PMC-Patients rows into patient records: ages in years, sex, ids, a content hash."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from patientinsight.records.ages import MAX_AGE_PARTS, YEARS_PER_UNIT
from patientinsight.records.columns import RECORD_COLUMNS

# The source field each record column is read from, which a quarantine reason names; `text` is read from
# `patient` (v1) or `text` (v2), per row (Normalized.text_field).
SOURCE_FIELDS = {
    "uid": "patient_uid", "pmid": "PMID", "title": "title", "text": "patient", "age_years": "age",
    "sex": "gender", "pub_date": "pub_date", "similar_patients": "similar_patients",
    "relevant_articles": "relevant_articles",
}  # fmt: skip

# The shape the v1 CSV export writes relevance maps in ({'33492400': 1, ...}): read with two regular
# expressions, about 10x faster than ast.literal_eval, which still reads every other shape.
_STR_INT_MAP = re.compile(
    r"\{\s*(?:'[^'\\\n]*'\s*:\s*(?:0|[1-9]\d*)\s*(?:,\s*'[^'\\\n]*'\s*:\s*(?:0|[1-9]\d*)\s*)*,?\s*)?\}"
)
_STR_INT_PAIR = re.compile(r"'([^'\\\n]*)'\s*:\s*(\d+)")

# Text that UTF-8 cannot store: bytes the source encoding did not decode (sources.py keeps them as
# surrogate escapes, U+DC80..U+DCFF) and lone surrogates from JSON's \ud800 escapes.
_SURROGATE = re.compile("[\ud800-\udfff]")
# What a malformed field can raise while it is parsed: each is that field's error, never a crash.
PARSE_ERRORS = (ValueError, SyntaxError, TypeError, OverflowError, RecursionError, MemoryError)
# Control characters other than tab, line feed and carriage return: C0, DEL and C1. They carry no clinical
# meaning and would be written as they are to terminals and pages (BEL rings, ESC [ starts a terminal
# sequence), so free text drops them; the raw row keeps them, should the row be quarantined for another reason.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass
class Normalized:
    """One row after normalization: the record, plus the field errors that send it to quarantine."""

    record: dict[str, Any]
    errors: list[tuple[str, str]] = field(default_factory=list)
    text_field: str = "patient"  # v1's name of the summary; v2's is `text`

    def source_field(self, column: str) -> str:
        """The field of the source row that a record column was read from."""
        return self.text_field if column == "text" else SOURCE_FIELDS.get(column, column)


def parse_literal(value: Any, expected: str) -> Any:
    """The CSV export writes lists and dicts as Python literals ("[[60.0, 'year']]"); JSON has them typed.
    Text that is no literal raises ValueError saying what was `expected`, not what ast saw: its messages
    show its internals ("malformed node or string: <ast.Name object at 0x7f...>")."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError):  # TypeError: an unhashable key, {[1]: 2}
            raise ValueError(f"expected {expected}; the text is not a literal of that form") from None
        except RecursionError:
            raise ValueError(f"expected {expected}; the text is nested too deeply") from None
    return value


def _amount(value: Any) -> float:
    # bool is an int to Python: [[True, 'year']] must not read as one year.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"age must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("age must be a finite non-negative number") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError("age must be a finite non-negative number")
    return number


def age_in_years(value: Any) -> float | None:
    """[[7.0, 'year'], [11.0, 'month']] -> 7.9167; None or [] -> None. Raises ValueError on bad input."""
    parsed = parse_literal(value, "[[value, unit], ...] such as [[60.0, 'year']]")
    if parsed is None or parsed == []:
        return None
    if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
        return _amount(parsed)
    if not isinstance(parsed, (list, tuple)):
        raise ValueError("expected [[value, unit], ...]")
    if len(parsed) > MAX_AGE_PARTS:
        raise ValueError(f"expected at most {MAX_AGE_PARTS} [value, unit] pairs (one per unit), got {len(parsed)}")
    total = 0.0
    for part in parsed:
        if not isinstance(part, (list, tuple)) or len(part) != 2:
            raise ValueError("expected [[value, unit], ...]")
        amount, unit = part
        unit_name = unit.strip().lower().rstrip("s") if isinstance(unit, str) else None
        if unit_name not in YEARS_PER_UNIT:
            raise ValueError(f"unknown age unit '{str(unit)[:20]}'")
        total += _amount(amount) * YEARS_PER_UNIT[unit_name]
    return round(total, 4)


def relevance_map(value: Any) -> dict[str, int]:
    """{'33492400': 2} in either export; v2 has no relevance fields, which reads as {}."""
    if isinstance(value, str) and _STR_INT_MAP.fullmatch(value.strip()):
        return {key: int(number) for key, number in _STR_INT_PAIR.findall(value)}
    parsed = parse_literal(value, "a mapping of id to relevance such as {'33492400': 2}")
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise ValueError("expected a mapping of id to relevance")
    return {str(k): _relevance(v) for k, v in parsed.items()}


def _relevance(value: Any) -> int:
    """A relevance grade is a whole number >= 0: 2.7, -1, inf, nan or True are errors, not 2, -1 or 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"relevance must be a whole number >= 0, got {type(value).__name__}")
    if (isinstance(value, float) and not value.is_integer()) or value < 0:  # inf and nan are not integers
        raise ValueError(f"relevance must be a whole number >= 0, got {value!r}")
    return int(value)


def content_hash(record: dict[str, Any]) -> str:
    """SHA-256 of every normalized field: any change to a record re-embeds and re-stores it."""
    payload = {k: record[k] for k in RECORD_COLUMNS if k != "content_hash"}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    # surrogatepass: a row with an undecodable byte still gets a hash (it is quarantined); others are unchanged.
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, list, tuple, dict)):  # no silent str() of a JSON list or object
        raise TypeError(f"expected text, got {type(value).__name__}")
    return str(value).strip()


def _free_text(value: Any) -> str:
    """Text a clinician reads (a title, a summary) without control characters (see _CONTROL)."""
    text = _text(value)
    return _CONTROL.sub("", text) if _CONTROL.search(text) else text


def unstorable(value: Any) -> str | None:
    """Why a raw value (a string, or strings inside lists and dicts) cannot be stored as it is, or None:
    a NUL byte, a byte the source encoding could not decode, a lone surrogate. No text in the reason."""
    stack = [value]
    while stack:  # iterative: a deeply nested JSON value cannot overflow the stack here
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "contains a NUL byte (the field would be cut short there)"
            found = None if item.isascii() else _SURROGATE.search(item)
            if found is not None:
                code = ord(found.group())
                if 0xDC80 <= code <= 0xDCFF:
                    return (
                        f"byte 0x{code - 0xDC00:02x} at character {found.start()} cannot be decoded in the "
                        "source encoding (set with --encoding / PATIENTINSIGHT_SOURCE_ENCODING)"
                    )
                return f"lone surrogate U+{code:04X} at character {found.start()} is not valid Unicode"
    return None


def printable(value: Any) -> Any:
    """`value` with every surrogate written out (an undecodable 0xff as the four characters \\xff), so that
    a quarantine entry can be written as UTF-8 JSON and still shows the bytes that were there."""
    if isinstance(value, str):
        return value if value.isascii() else _SURROGATE.sub(_escape_surrogate, value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    return value


def _escape_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def normalize_row(raw: dict[str, Any]) -> Normalized:
    """Map a v1 or v2 row onto the record columns; a field that cannot be parsed is an error, not a crash."""
    errors: list[tuple[str, str]] = []
    if "_parse_error" in raw:
        errors.append(("row", f"invalid JSON ({raw['_parse_error']})"))
    if "_csv_error" in raw:
        errors.append(("row", f"malformed CSV row ({raw['_csv_error']}): a stray quote, or a comma outside quotes?"))
    if "_not_an_object" in raw:
        errors.append(("row", "not a JSON object"))
    for column, value in raw.items():
        problem = unstorable(column) or unstorable(value)
        if problem:
            errors.append((str(printable(column)) or "(unnamed column)", problem))

    def parsed(column: str, parse: Callable[[Any], Any], default: Any) -> Any:
        try:
            return parse(raw.get(column))
        except PARSE_ERRORS as exc:  # the field's error, named by its column in the source
            errors.append((column, f"cannot parse {column}: {str(exc) or type(exc).__name__}"))
            return default

    pmid = raw.get("PMID")
    if isinstance(pmid, float) and pmid.is_integer():
        pmid = int(pmid)
    text_column = "patient" if raw.get("patient") not in (None, "") else "text"
    record: dict[str, Any] = {
        "uid": parsed("patient_uid", _text, ""),
        "pmid": parsed("PMID", lambda _: _text(pmid), ""),
        "title": parsed("title", _free_text, ""),
        "text": parsed(text_column, _free_text, ""),
        "age_years": parsed("age", age_in_years, None),
        "sex": parsed("gender", _text, "").upper(),
        "pub_date": parsed("pub_date", _free_text, "") or None,
        "similar_patients": parsed("similar_patients", relevance_map, {}),
        "relevant_articles": parsed("relevant_articles", relevance_map, {}),
    }
    record["content_hash"] = content_hash(record)
    return Normalized(record, errors, text_column)
