"""The few typed fields the Kubernetes API emulator decodes and validates as the real server does.

The emulator has no schema: objects are stored as sent. The exceptions are the fields leader election lives on,
where a client bug would otherwise go unnoticed until it meets a real server: a Lease's spec (holderIdentity,
leaseDurationSeconds, acquireTime, renewTime, leaseTransitions) and the `eventTime` of both Event APIs.

- Decoding (HTTP 400, worded as Go's `encoding/json` and `time.Parse`): int32 and string fields must have that JSON
  type; a MicroTime must be RFC 3339 with exactly six fractional digits (`2006-01-02T15:04:05.000000Z07:00`) and is
  stored in UTC (`...Z`); `null` drops the field.
- Validation (HTTP 422): leaseDurationSeconds > 0, leaseTransitions >= 0.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from kubevip_testbed.emulators import kubeapi_status as st
from kubevip_testbed.emulators.kubeapi_resources import ResourceDef

MICRO_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"


class _ParseError(ValueError):
    """`time.Parse` failed; the text is Go's, after `parsing time "..."`."""


def json_type(value: Any) -> str:
    """How Go's encoding/json names the JSON type of a decoded value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _digits(value: str, count: int) -> int | None:
    head = value[:count]
    return int(head) if len(head) == count and head.isascii() and head.isdigit() else None


def parse_micro_time(text: str) -> datetime:
    """Go's `time.Parse(RFC3339Micro, text)`: the same accepted inputs and the same error texts."""
    value = text

    def bad(rest: str, element: str) -> _ParseError:
        return _ParseError(f'parsing time "{text}" as "{MICRO_LAYOUT}": cannot parse "{rest}" as "{element}"')

    def out_of_range(what: str) -> _ParseError:
        return _ParseError(f'parsing time "{text}": {what} out of range')

    def literal(rest: str, char: str) -> str:
        if not rest.startswith(char):
            raise bad(rest, char)
        return rest[1:]

    def two_digits(rest: str, element: str, low: int, high: int, what: str) -> int:
        """A two-digit layout element ("01", "02", "04", "05"), range-checked as time.Parse does."""
        number = _digits(rest, 2)
        if number is None:
            raise bad(rest, element)
        if not low <= number <= high:
            raise out_of_range(what)
        return number

    year = _digits(value, 4)
    if year is None:
        raise bad(value, "2006")
    value = literal(value[4:], "-")
    month = two_digits(value, "01", 1, 12, "month")
    value = literal(value[2:], "-")
    day = two_digits(value, "02", 0, 31, "day")  # checked against the month at the end
    value = literal(value[2:], "T")
    hour = _digits(value, 2)  # "15" also takes one digit
    width = 2
    if hour is None:
        hour, width = _digits(value, 1), 1
        if hour is None:
            raise bad(value, "15")
    if hour >= 24:
        raise out_of_range("hour")
    value = literal(value[width:], ":")
    minute = two_digits(value, "04", 0, 59, "minute")
    value = literal(value[2:], ":")
    second = two_digits(value, "05", 0, 59, "second")
    value = value[2:]
    fraction = value[1:7]
    if len(value) < 7 or value[0] not in ".," or not (fraction.isascii() and fraction.isdigit()):
        raise bad(value, ".000000")
    micros, value = int(fraction), value[7:]
    if value.startswith("Z"):
        offset, value = timedelta(0), value[1:]
    else:
        hours, minutes = _digits(value[1:], 2), _digits(value[4:], 2)
        if len(value) < 6 or value[3] != ":" or value[0] not in "+-" or hours is None or minutes is None:
            raise bad(value, "Z07:00")
        if hours > 24:
            raise out_of_range("time zone offset hour")
        if minutes > 60:
            raise out_of_range("time zone offset minute")
        offset = timedelta(hours=hours, minutes=minutes) * (1 if value[0] == "+" else -1)
        value = value[6:]
    if value:
        raise _ParseError(f'parsing time "{text}": extra text: "{value}"')
    if day < 1 or day > calendar.monthrange(year, month)[1]:
        raise out_of_range("day")
    return datetime(year, month, day, hour, minute, second, micros, tzinfo=timezone(offset))


def format_micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# A field decoder returns the value to store, or raises _DecodeError with Go's text.
class _DecodeError(ValueError):
    pass


def _go_field(struct: str, path: str, gotype: str) -> str:
    return f"Go struct field {struct}.{path} of type {gotype}"


def _int32(struct: str, path: str) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and -2**31 <= value < 2**31:
            return value
        shown = f"number {value}" if isinstance(value, int | float) and not isinstance(value, bool) \
            else json_type(value)
        raise _DecodeError(f"json: cannot unmarshal {shown} into {_go_field(struct, path, 'int32')}")
    return decode


def _string(struct: str, path: str) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        if isinstance(value, str):
            return value
        raise _DecodeError(f"json: cannot unmarshal {json_type(value)} into {_go_field(struct, path, 'string')}")
    return decode


def _micro_time(struct: str, path: str) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        if not isinstance(value, str):
            raise _DecodeError(f"json: cannot unmarshal {json_type(value)} into "
                               f"{_go_field(struct, path, 'string')}")
        try:
            return format_micro_time(parse_micro_time(value))
        except _ParseError as exc:
            raise _DecodeError(str(exc)) from None
    return decode


_LEASE_SPEC: dict[str, Callable[[Any], Any]] = {
    "holderIdentity": _string("LeaseSpec", "spec.holderIdentity"),
    "leaseDurationSeconds": _int32("LeaseSpec", "spec.leaseDurationSeconds"),
    "acquireTime": _micro_time("LeaseSpec", "spec.acquireTime"),
    "renewTime": _micro_time("LeaseSpec", "spec.renewTime"),
    "leaseTransitions": _int32("LeaseSpec", "spec.leaseTransitions"),
    "strategy": _string("LeaseSpec", "spec.strategy"),
    "preferredHolder": _string("LeaseSpec", "spec.preferredHolder"),
}
_EVENT: dict[str, Callable[[Any], Any]] = {"eventTime": _micro_time("Event", "eventTime")}


def _decode_fields(node: dict[str, Any], fields: dict[str, Callable[[Any], Any]]) -> None:
    """Decode the known fields in document order (Go reports the first failure); `null` drops a field."""
    for key in list(node):
        decode = fields.get(key)
        if decode is None:
            continue
        if node[key] is None:
            del node[key]
        else:
            node[key] = decode(node[key])


def decode(r: ResourceDef, obj: dict[str, Any]) -> None:
    """Check and normalise the typed fields of `obj` in place; 400 as the real server's decoder answers."""
    try:
        if r.key == "coordination.k8s.io/v1/leases":
            spec = obj.get("spec")
            if spec is None:
                return
            if not isinstance(spec, dict):
                raise _DecodeError(f"json: cannot unmarshal {json_type(spec)} into "
                                   f"{_go_field('Lease', 'spec', 'v1.LeaseSpec')}")
            _decode_fields(spec, _LEASE_SPEC)
        elif r.kind == "Event":
            _decode_fields(obj, _EVENT)
    except _DecodeError as exc:
        raise st.cannot_decode(r, str(exc)) from None


def validate(r: ResourceDef, obj: dict[str, Any]) -> None:
    """422 Invalid for values the real server's validation refuses (Leases only)."""
    if r.key != "coordination.k8s.io/v1/leases":
        return
    spec = obj.get("spec") or {}
    causes: list[tuple[str, str, str]] = []
    duration, transitions = spec.get("leaseDurationSeconds"), spec.get("leaseTransitions")
    if duration is not None and duration <= 0:
        causes.append(("spec.leaseDurationSeconds", "FieldValueInvalid",
                       f"Invalid value: {duration}: must be greater than 0"))
    if transitions is not None and transitions < 0:
        causes.append(("spec.leaseTransitions", "FieldValueInvalid",
                       f"Invalid value: {transitions}: must be greater than or equal to 0"))
    if causes:
        raise st.invalid_causes(r, obj["metadata"].get("name") or "", causes)
