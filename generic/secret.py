"""A value that must never be printed: API keys and BGP passwords.

The wrapper makes the safe thing the default: `str`, `repr`, `format` and f-strings all show a mask, so a
secret that reaches a log line or an exception by accident shows up as `***`. Only `reveal()` hands out the
value, and the few places that call it (the HTTP header, the BGP speaker) are easy to audit with grep.
"""

from __future__ import annotations

from typing import Any

MASK = "***"


class Secret:
    """An immutable secret string whose text representation is always masked."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret holds a str")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The real value, for the one call that sends it where it belongs."""
        return str(object.__getattribute__(self, "_value"))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self.reveal() == other.reveal()

    def __hash__(self) -> int:
        return hash(("Secret", self.reveal()))

    def __bool__(self) -> bool:
        return bool(self.reveal())

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not serialisable")
