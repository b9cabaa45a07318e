"""Fuzz the whole configuration path: any flag or variable value ends in a config or a `ConfigError`."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout, suppress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubevip_metal import parsers
from kubevip_metal.cli import main
from kubevip_metal.config import Command, ConfigError, Given, build_config
from kubevip_metal.options import OPTIONS

_text = st.text(max_size=40)
_names = st.sampled_from([option.name for option in OPTIONS])
_sources = st.sampled_from(["flag", "env"])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_names, _text, max_size=8), st.sampled_from(list(Command)))
def test_any_values_give_a_config_or_a_config_error(values: dict[str, str], command: Command) -> None:
    base = {"controlplane": "true", "arp": "true", "address": "192.0.2.10"}
    given_values = {name: Given(f"--{name}", text) for name, text in {**base, **values}.items()}
    try:
        build_config(given_values, command, read_files=False, hostname=lambda: "n1")
    except ConfigError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from([f for o in OPTIONS for f in o.flags]), _text), max_size=8))
def test_any_command_line_exits_0_or_2_with_one_line(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(["manifest", "daemonset", *argv])
    assert status in (0, 2)
    if status == 2:
        assert len(err.getvalue().splitlines()) == 1


@given(_text)
def test_value_parsers_raise_only_value_error(text: str) -> None:
    for parse in (parsers.parse_bool, parsers.parse_asn, parsers.parse_seconds, parsers.parse_port, parsers.parse_ip,
                  parsers.parse_ipv4, parsers.parse_dns_label, parsers.parse_dns_subdomain, parsers.parse_interface,
                  parsers.parse_uuid, parsers.parse_listen_address):
        with suppress(ValueError):
            parse(text)
