"""Platform profiles: shipped ones load, users add and extend their own, commands are built
with quoted values, and broken profiles say what is wrong."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headless_ops.helpers.ssh.profiles import ProfileError, ProfileLibrary, render_command


def test_shipped_profiles_load_and_cover_every_ssh_operation() -> None:
    library = ProfileLibrary()
    assert {"linux", "openwrt", "ios"} <= set(library.names())
    for name in ("linux", "openwrt", "ios"):
        profile = library.load(name)
        for op in (
            "backup_configuration",
            "configuration_sync",
            "firmware_update",
            "reboot",
            "get_parameters",
        ):
            assert profile.supports(op), (name, op)
        assert "version" in profile.facts
    assert library.load("ios").mode == "cli" and library.load("ios").cli is not None


@given(st.text(max_size=40))
def test_exec_values_are_one_shell_word_whatever_they_hold(value: str) -> None:
    command = render_command("cat {path}", {"path": value})
    assert shlex.split(command) == ["cat", value]


def test_hostile_values_never_become_commands() -> None:
    for value in ["x; rm -rf /", "$(reboot)", "`id`", "a\nreboot", "' OR '1"]:
        command = render_command("sha256sum {image_path}", {"image_path": value})
        assert shlex.split(command) == ["sha256sum", value]


def test_cli_and_path_values_refuse_control_characters() -> None:
    assert render_command("verify flash:{f}", {"f": "a.bin"}, mode="cli") == "verify flash:a.bin"
    for mode in ("cli", "path"):
        with pytest.raises(ProfileError, match="control characters"):
            render_command("verify flash:{f}", {"f": "a.bin\nreload"}, mode=mode)  # type: ignore[arg-type]


def test_unknown_or_odd_placeholders_are_errors() -> None:
    with pytest.raises(ProfileError, match="needs the value 'missing'"):
        render_command("cat {missing}", {})
    with pytest.raises(ProfileError, match="bad placeholder"):
        render_command("cat {p!r}", {"p": "x"})
    with pytest.raises(ProfileError, match="bad placeholder"):
        render_command("cat {p.__class__}", {"p": "x"})


def test_a_user_profile_extends_a_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "appliance.yaml").write_text(
        "name: appliance\nextends: linux\nvars:\n  config_path: /opt/app/app.conf\n"
        "operations:\n  reboot:\n    command: 'systemctl reboot'\n"
    )
    library = ProfileLibrary(tmp_path)
    assert "appliance" in library.names()
    profile = library.load("appliance")
    assert profile.vars["config_path"] == "/opt/app/app.conf"
    assert profile.vars["upload_dir"] == ProfileLibrary().load("linux").vars["upload_dir"]
    assert profile.operations.reboot is not None
    assert profile.operations.reboot.command == "systemctl reboot"
    assert profile.operations.firmware_update is not None  # inherited whole


def test_a_user_profile_overrides_a_shipped_one_and_changes_are_picked_up(tmp_path: Path) -> None:
    library = ProfileLibrary(tmp_path, recheck_s=0)
    assert (
        library.load("linux").vars["upload_dir"]
        == ProfileLibrary().load("linux").vars["upload_dir"]
    )
    path = tmp_path / "linux.yaml"
    path.write_text(
        "name: linux\nvars:\n  upload_dir: /data\nfacts:\n  version:\n    command: 'cat /v'\n"
    )
    os.utime(path, (1, 1))  # a distinct mtime from any earlier state
    profile = library.load("linux")
    assert profile.vars == {"upload_dir": "/data"}
    assert not profile.supports("reboot")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nmode: telnet\n", "invalid"),
        ("name: x\nfacts:\n  version:\n    command: c\n    pattern: '(['\n", "regular expression"),
        ("- a list\n", "must be a mapping"),
        ("name: x\nextends: x\n", "loops"),
        ("name: [unclosed\n", "not valid YAML"),
        ("name: x\nextends: nowhere\n", "no SSH profile named 'nowhere'"),
    ],
)
def test_broken_profiles_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(ProfileError, match=message):
        ProfileLibrary(tmp_path).resolve("x")


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ProfileError, match="linux"):
        ProfileLibrary().load("nope")
    with pytest.raises(ProfileError, match="invalid profile name"):
        ProfileLibrary().load("../etc/passwd")


def test_the_profile_folder_is_looked_at_most_once_per_recheck_interval(tmp_path: Path) -> None:
    library = ProfileLibrary(tmp_path, recheck_s=3600)
    shipped = library.load("linux")
    (tmp_path / "linux.yaml").write_text("name: linux\nvars:\n  upload_dir: /data\n")
    assert library.load("linux") == shipped  # within the interval: the folder is not re-read
    assert ProfileLibrary(tmp_path, recheck_s=3600).load("linux").vars == {"upload_dir": "/data"}
