"""The README's reference tables match the code they describe."""

from __future__ import annotations

import re
from pathlib import Path

from click import Group

from cli.main import main
from core.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def test_every_setting_is_in_the_settings_table_and_nothing_else():
    documented = set(re.findall(r"^\| `(FLAVOURS_[A-Z0-9_]+)` \|", _section("Settings"), re.M))
    defined = {f"FLAVOURS_{name.upper()}" for name in Settings.model_fields}

    assert documented == defined


def test_every_command_is_in_the_commands_table():
    assert isinstance(main, Group)
    table = _section("Commands")
    missing = [name for name in main.commands if f"flavours {name}" not in table]

    assert missing == []
