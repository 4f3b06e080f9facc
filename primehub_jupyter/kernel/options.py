"""The options primehub-deploy and the magics share, defined once and rendered for each parser."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

import click

# Both front ends keep their own parser: the CLI is click (groups, prompts, shell completion);
# the magics are argparse, whose variadic options (`--metadata a=1 b=2`, `--sample X[:2]`) click
# has no equivalent for. What they share is this table: an option's flags, type, default and
# help live here once, and each parser renders it. A new shared option is one line here.


@dataclasses.dataclass(frozen=True)
class Option:
    """One command-line option as both front ends know it."""

    flags: tuple[str, ...]
    help: str
    dest: str | None = None  # the parameter's name; by default the long flag's
    type: type | None = None
    default: Any = None
    flag: bool = False  # takes no value: present means True
    switch: bool = False  # `--x/--no-x`, `default` says which one holds when neither is given
    show_default: bool = False

    def but(self, **changes: Any) -> Option:
        """This option with some fields changed (e.g. another default in the magics)."""
        return dataclasses.replace(self, **changes)

    @property
    def name(self) -> str:
        """The parameter's name: `dest`, or the first long flag's, as argparse and click do."""
        if self.dest:
            return self.dest
        long = next(f for f in self.flags if f.startswith("--"))
        return long[2:].replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add this option to an argparse parser (the magics)."""
        # argparse formats help with %-style: a literal % must be doubled.
        text = self.help.replace("%", "%%")
        if self.show_default:
            text += " (default: %(default)s)"
        kwargs: dict[str, Any] = {"help": text, "dest": self.name}
        if self.switch:
            kwargs.update(action=argparse.BooleanOptionalAction, default=bool(self.default))
        elif self.flag:
            kwargs.update(action="store_true")
        else:
            kwargs.update(default=self.default)
            if self.type is not None:
                kwargs["type"] = self.type
        parser.add_argument(*self.flags, **kwargs)

    def click(self) -> Callable[[Any], Any]:
        """This option as a click decorator (primehub-deploy)."""
        kwargs: dict[str, Any] = {"help": self.help}
        flags = list(self.flags)
        if self.switch:
            flags = [f"{f}/--no-{f[2:]}" if f.startswith("--") else f for f in flags]
            kwargs["default"] = bool(self.default)
        elif self.flag:
            kwargs["is_flag"] = True
        else:
            kwargs["default"] = self.default
            if self.type is not None:
                kwargs["type"] = self.type
            kwargs["show_default"] = self.show_default
        return click.option(*flags, self.name, **kwargs)


def click_options(*options: Option) -> Callable[[Any], Any]:
    """Decorate a click command with these options, in this order in its help."""

    def decorate(fn: Any) -> Any:
        for option in reversed(options):
            fn = option.click()(fn)
        return fn

    return decorate


def add_options(parser: argparse.ArgumentParser, *options: Option) -> argparse.ArgumentParser:
    """Add these options to an argparse parser; returns the parser."""
    for option in options:
        option.add_to(parser)
    return parser


def wait_switch(phase: str, *, default: bool) -> Option:
    """`--wait/--no-wait` for a change that ends in `phase` (the CLI returns at once by default,
    the magics wait)."""
    text = f"Wait until {phase}" + (
        " (the default; --no-wait returns at once)." if default else "."
    )
    return Option(("--wait",), text, switch=True, default=default)


def split_names(text: str | None) -> list[str]:
    """`"g1, g2,"` -> ["g1", "g2"]: a comma-separated list of names (blanks dropped)."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def policy_patch(groups: str | None, users: str | None) -> dict[str, Any] | None:
    """The endpoint fields `--policy-groups`/`--policy-users` set: None when neither is given.

    Together they are the whole policy (a missing one is empty); both empty remove it, so the
    deployment's group may call again.
    """
    if groups is None and users is None:
        return None
    policy = {"users": split_names(users), "groups": split_names(groups)}
    return {"policy": policy if policy["users"] or policy["groups"] else None}


# ---- the shared options -------------------------------------------------------------------

TIMEOUT = Option(("--timeout",), "Seconds to wait.", type=float, default=600, show_default=True)
MESSAGE = Option(("-m", "--message"), "Update message, kept in the history.")

# access policy of a private endpoint: `%deploy`, `%%deploy`, `primehub-deploy create`
POLICY_GROUPS = Option(
    ("--policy-groups",),
    "Private endpoints: groups whose members may call with a bearer token, comma-separated "
    "(the policy is these groups and --policy-users; both empty: the deployment's group).",
)
POLICY_USERS = Option(
    ("--policy-users",),
    "Private endpoints: users who may call with a bearer token, comma-separated.",
)

# list: `primehub-deploy get`, `%phdeploy list`
NAME_FILTER = Option(("--name",), "Only names containing this.")
GROUP_FILTER = Option(("--group",), "Only this group.")
MINE = Option(("--mine",), "Only deployments you created.", flag=True)

# wait: `primehub-deploy wait`, `%phdeploy wait`
WAIT_PHASE = Option(
    ("--for",), "Phase to wait for.", dest="phase", default="Deployed", show_default=True
)

# logs: `primehub-deploy logs`, `%phlogs`
REPLICA = Option(("--replica",), "Replica name or index (default: all current replicas).")
TAIL = Option(("--tail",), "Last N lines, or 'all'.", default="2000", show_default=True)
FOLLOW = Option(("-f", "--follow"), "Keep printing new lines (Ctrl-C stops).", flag=True)

# metrics: `primehub-deploy metrics`, `%phdeploy metrics`
WINDOW = Option(("--window",), "Seconds of history.", type=float, default=900, show_default=True)
STEP = Option(("--step",), "Seconds per point.", type=float, default=60, show_default=True)

# invoke: `primehub-deploy invoke`, `%phdeploy invoke`
API_PATH = Option(
    ("--path",),
    "Path of the model's API to call.",
    dest="api_path",
    default="api/v1.0/predictions",
    show_default=True,
)

# batch jobs: `primehub-deploy batch`, `%phdeploy batch`
BATCH_OUTPUT = Option(("-o", "--output"), "Output file (default: INPUT.scored.EXT beside it).")
JOB_FORMAT = Option(
    ("--format",), "Input format: csv, parquet or jsonl (default: from the file's ending)."
)
JOB_PREDICTOR = Option(("--predictor",), "Score with this predictor (default: the primary).")
CHUNK_ROWS = Option(("--chunk-rows",), "Rows read and scored at a time.", type=int)
OUTPUT_COLUMNS = Option(
    ("--output-columns",),
    "'all': the input columns and the predictions; 'predictions': the predictions only.",
    default="all",
    show_default=True,
)
OVERWRITE = Option(("--overwrite",), "Replace the output file if it exists.", flag=True)
JOB_OPTIONS = (BATCH_OUTPUT, JOB_FORMAT, JOB_PREDICTOR, CHUNK_ROWS, OUTPUT_COLUMNS, OVERWRITE)
