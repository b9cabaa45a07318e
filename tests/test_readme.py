"""README stays true: its flag table is the code's, and its first two commands are what CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

from kubevip_metal.options import OPTIONS, markdown_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_flag_table_matches_the_code() -> None:
    table = README.split("<!-- flags:begin -->\n", 1)[1].split("<!-- flags:end -->", 1)[0]
    assert table.strip() == markdown_table().strip(), "regenerate with: python -m kubevip_metal.options"


def test_every_env_var_is_documented() -> None:
    for option in OPTIONS:
        for name in option.env:
            assert f"`{name}`" in README


def test_opening_block_has_two_commands_and_ci_runs_the_second() -> None:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block is not None and README.index("```bash") < README.index("## ")
    commands = [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert commands[1] in (ROOT / ".ci" / "run").read_text() or commands[1] == "bash tests/run.sh"
    assert "bash tests/run.sh" in (ROOT / ".ci" / "run").read_text()


def test_the_first_command_installs_what_the_lab_checks_for() -> None:
    """README's first command installs exactly the Debian packages `lab`'s own prerequisite check names, plus
    python3-venv (Debian's python3 cannot make a virtualenv without it), and both distributions."""
    from kubevip_testbed.rig.prereq import PACKAGES

    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block is not None
    first = block.group(1).splitlines()[0]
    install = re.search(r"\bDEBIAN_FRONTEND=noninteractive apt-get install ([^&>|;]*)", first)
    assert install is not None, first
    packages = {word for word in install.group(1).split() if not word.startswith("-")}
    assert packages == PACKAGES | {"python3-venv"}
    assert {"-y", "-qq"} <= set(install.group(1).split())
    assert ".venv/bin/pip install -q . ./testbed &&" in first and first.endswith(".venv/bin/kube-vip-metal lab")


def test_every_metric_named_in_readme_is_served() -> None:
    """The metrics table, the sample scrape and the alert rules name only metrics the daemon serves (a renamed
    metric would leave an alert that never fires)."""
    source = (ROOT / "kubevip_metal" / "metrics.py").read_text()
    served = set(re.findall(r'"(kube_vip_[a-z_]+)"', source))
    exposed = {name + suffix for name in served for suffix in ("", "_total", "_bucket", "_count", "_sum")}
    named = set(re.findall(r"\bkube_vip_[a-z_]+", README))
    assert named <= exposed, sorted(named - exposed)
    alerts = README.split("**Alerts worth setting**", 1)[1].split("```", 2)[1]
    assert {n for n in named if n in alerts} and all(n in exposed for n in re.findall(r"kube_vip_[a-z_]+", alerts))
