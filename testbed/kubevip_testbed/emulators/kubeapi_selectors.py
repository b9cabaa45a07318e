"""Label and field selectors, parsed once per request and matched against stored objects.

The grammar is the real server's: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a` for labels;
`path=v`, `path==v`, `path!=v` for fields. A selector the real server would refuse is refused (HTTP 400).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_EQ = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|!=|=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")
_VALUE_ONLY = re.compile(rf"^{_VALUE}$")


class SelectorError(ValueError):
    """The selector does not parse; answered with HTTP 400."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op == "in":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `( )`."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if text is None or not text.strip():
            return cls()
        requirements: list[Requirement] = []
        for part in _split_top_level(text):
            requirements.append(_parse_requirement(part))
        return cls(tuple(requirements))

    def matches(self, obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in self.requirements)


def _parse_requirement(part: str) -> Requirement:
    if m := _SET.match(part):
        values = [v.strip() for v in m["values"].split(",")]
        if values == [""]:  # accepted by the real server: `in ()` matches nothing, `notin ()` everything
            return Requirement(m["key"], m["op"])
        if any(not _VALUE_ONLY.match(v) for v in values):
            raise SelectorError(f"unable to parse requirement: invalid label value in {part.strip()!r}")
        return Requirement(m["key"], m["op"], frozenset(values))
    if m := _EQ.match(part):
        return Requirement(m["key"], "notin" if m["op"] == "!=" else "in", frozenset([m["value"]]))
    if m := _EXISTS.match(part):
        return Requirement(m["key"], "!exists" if m["neg"] else "exists")
    raise SelectorError(f"unable to parse requirement: {part.strip()!r}")


def field_value(obj: dict[str, Any], path: str) -> str:
    """The string form of a dotted field, as the real server compares it ("" when absent, "true"/"false")."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (path, equal?, value)

    @classmethod
    def parse(cls, text: str | None, allowed: Callable[[str], bool],
              unknown: Callable[[str], str] = "field label not supported: {}".format) -> FieldSelector:
        """`allowed` tells the fields a selector may name; `unknown` words the refusal of another one."""
        if text is None or not text.strip():
            return cls()
        terms: list[tuple[str, bool, str]] = []
        for part in text.split(","):
            m = re.match(r"^\s*(?P<path>[^=!\s]+)\s*(?P<op>==|!=|=)\s*(?P<value>.*?)\s*$", part)
            if not m:
                raise SelectorError(f"invalid selector: {part.strip()!r}; can't understand {part.strip()!r}")
            if not allowed(m["path"]):
                raise SelectorError(unknown(m["path"]))
            terms.append((m["path"], m["op"] != "!=", m["value"]))
        return cls(tuple(terms))

    def matches(self, obj: dict[str, Any]) -> bool:
        return all((field_value(obj, path) == value) == equal for path, equal, value in self.terms)
