"""The CLI's shape: it never loads the Jupyter server to answer, and shares options with magics."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import click
import pytest

from primehub_jupyter.kernel import options as shared

# After `primehub-deploy get --help`, which modules are loaded (run in a fresh interpreter).
PROBE = """
import contextlib, io, json, sys
from primehub_jupyter.cli import cli
with contextlib.redirect_stdout(io.StringIO()) as out:
    cli.main(["get", "--help"], prog_name="primehub-deploy", standalone_mode=False)
print(json.dumps({"help": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def test_the_cli_answers_without_loading_the_jupyter_server():
    found = json.loads(
        subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
        ).stdout
    )
    assert "List deployments, or show one." in found["help"]
    server_side = [
        name
        for name in found["modules"]
        if name.split(".")[0] == "jupyter_server" or name.startswith("primehub_jupyter.server")
    ]
    assert server_side == []


def _argparse(*options: shared.Option) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="%probe", exit_on_error=False)
    return shared.add_options(parser, *options)


def _click(*options: shared.Option) -> click.Command:
    @click.command()
    @shared.click_options(*options)
    def probe(**params: object) -> dict[str, object]:
        return params

    return probe


CASES = [
    ((shared.REPLICA, shared.TAIL, shared.FOLLOW), []),
    ((shared.REPLICA, shared.TAIL, shared.FOLLOW), ["--replica", "r-1", "--tail", "5", "-f"]),
    ((shared.NAME_FILTER, shared.GROUP_FILTER, shared.MINE), ["--name", "iris", "--mine"]),
    ((shared.WAIT_PHASE, shared.TIMEOUT), ["--for", "Stopped", "--timeout", "2.5"]),
    ((shared.WINDOW, shared.STEP), ["--window", "60", "--step", "5"]),
    ((shared.WINDOW, shared.STEP.but(default=15)), []),
    ((shared.API_PATH, shared.MESSAGE), ["--path", "api/v0.1/feedback", "-m", "why"]),
    ((shared.wait_switch("Deployed", default=True),), ["--no-wait"]),
    ((shared.wait_switch("Deployed", default=False),), []),
    ((shared.wait_switch("Deployed", default=False),), ["--wait"]),
]


@pytest.mark.parametrize(("options", "words"), CASES)
def test_both_parsers_read_a_shared_option_the_same(options, words):
    from_magic = vars(_argparse(*options).parse_args(words))
    from_cli = _click(*options).main(words, standalone_mode=False)
    assert from_magic == from_cli
    assert set(from_magic) == {option.name for option in options}


def test_a_shared_option_has_one_help_and_one_type_in_both_parsers():
    for option in (shared.TAIL, shared.TIMEOUT, shared.STEP, shared.WAIT_PHASE):
        magic_help = _argparse(option).format_help()
        cli_help = _click(option).get_help(click.Context(_click(option)))
        first_words = option.help.split(".")[0]
        assert first_words in " ".join(magic_help.split())
        assert first_words in " ".join(cli_help.split())
    with pytest.raises(argparse.ArgumentError, match="invalid float value: 'soon'"):
        _argparse(shared.TIMEOUT).parse_args(["--timeout", "soon"])
    with pytest.raises(click.BadParameter, match="'soon' is not a valid float"):
        _click(shared.TIMEOUT).main(["--timeout", "soon"], standalone_mode=False)


def test_the_magics_and_the_cli_show_the_same_help_for_a_shared_option(capsys):
    from primehub_jupyter.cli import cli
    from primehub_jupyter.kernel.magics import DeploymentMagics

    magics = DeploymentMagics(None)
    magics.phlogs("--help")
    magic_help = " ".join(capsys.readouterr().out.split())
    cli_help = " ".join(cli.commands["logs"].get_help(click.Context(cli.commands["logs"])).split())
    for option in (shared.REPLICA, shared.TAIL, shared.FOLLOW):
        assert option.help in magic_help
        assert option.help in cli_help
    assert "[default: 2000]" in cli_help and "(default: 2000)" in magic_help
