"""IPython magics: %deploy / %%deploy, %phlogs and %phdeploy (`%load_ext primehub_jupyter`)."""

from __future__ import annotations

import argparse
import functools
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class

from . import options as shared
from .client import Client, DeploymentFailed, PrimeHubError, WaitTimeout
from .compare import CompareView
from .deployment import Deployment, from_response, package_for_deploy, to_payload
from .display import Table, replica_range
from .magics_jobs import JobMagics
from .results import DeploymentList, MetricsView, NewClient
from .words import describe_changes, display_value, field_label, in_words, local_time


class MagicError(Exception):
    """A mistake in a magic's arguments or input: shown as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise MagicError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        # --help prints and lands here: stop the magic without an error.
        raise MagicError("") if status else _HelpShown()


class _HelpShown(Exception):
    pass


class MagicFailed(Exception):
    """A magic that failed: the cell stops (so "Run All" does too) with one readable line.

    IPython shows what `_render_traceback_` returns instead of a traceback, so the user sees
    the reason and never a stack of our internals.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[1;31mError:\x1b[0m {self.message}"]


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every failure into MagicFailed: one readable line, and the cell stops."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _HelpShown:
            return None
        except MagicFailed:
            raise
        except (PrimeHubError, MagicError) as error:
            message = getattr(error, "message", None) or str(error)
            if isinstance(error, PrimeHubError):
                # The API names `spec.predictors.0.replicas`; the user typed `--replicas`.
                message = in_words(message, error.details, MAGIC_FLAGS)
            if not message:  # argparse already printed its usage
                message = "invalid arguments (see the usage above)"
            raise MagicFailed(message) from None
        except KeyboardInterrupt:
            raise MagicFailed("interrupted") from None
        except Exception as error:  # never a traceback into our internals: one line
            raise MagicFailed(f"{type(error).__name__}: {error}") from None

    return wrapper


# The magics' name for each API field: the flag of %deploy / %%deploy that sets it.
MAGIC_FLAGS = {
    "id": "--id",
    "spec.displayName": "--name",
    "spec.groupName": "--group",
    "spec.description": "--description",
    "spec.updateMessage": "--update-message",
    "spec.endpoint.accessType": "--private/--public",
    "spec.endpoint.policy": "--policy-groups/--policy-users",
    "spec.predictors.0.replicas": "--replicas",
    "spec.predictors.0.instanceType": "--instance-type",
    "spec.predictors.0.metadata": "--metadata",
}


def _metadata(pairs: list[str] | None) -> dict[str, str]:
    result = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise MagicError(f"--metadata expects key=value, got '{pair}'")
        key, value = pair.split("=", 1)
        result[key.strip()] = value.strip()
    return result


def _deploy_parser(prog: str, *, cell: bool) -> _Parser:
    parser = _Parser(prog=prog, add_help=True)
    if cell:
        parser.add_argument("id", nargs="?", help="deployment id to create or update")
    else:
        parser.add_argument("model", help="the notebook variable holding the fitted model")
        parser.add_argument("--id", help="deployment id (default: generated from the name)")
    parser.add_argument("--name", help="display name (default: the variable's name)")
    parser.add_argument("--group", help="group (default: your first group with deployment on)")
    parser.add_argument("--instance-type", help="instance type (default: the group's first)")
    parser.add_argument("--replicas", type=int, help="number of replicas (default 1)")
    access = parser.add_mutually_exclusive_group()
    access.add_argument("--private", action="store_true", help="clients need a token")
    access.add_argument("--public", action="store_true", help="anyone may call it")
    shared.add_options(parser, shared.POLICY_GROUPS, shared.POLICY_USERS)
    parser.add_argument("--description", help="description")
    shared.MESSAGE.but(flags=("--update-message",)).add_to(parser)
    parser.add_argument("--metadata", nargs="*", metavar="KEY=VALUE", help="model metadata")
    parser.add_argument("--files", nargs="*", metavar="PATH", help="files a custom model needs")
    parser.add_argument(
        "--sample",
        nargs="+",
        metavar="EXPR",
        help="example input rows (a notebook expression, e.g. X[:2]), recorded in the bundle",
    )
    shared.add_options(parser, shared.wait_switch("Deployed", default=True), shared.TIMEOUT)
    return parser


@magics_class
class DeploymentMagics(JobMagics, Magics):
    """The PrimeHub magics; one Client per kernel, found on first use."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client()
        return self._client

    # ---- %deploy / %%deploy -----------------------------------------------------------

    @line_cell_magic
    @_friendly
    def deploy(self, line: str, cell: str | None = None) -> Deployment | None:
        """Deploy a model: `%deploy MODEL_VAR [options]`, or `%%deploy [ID]` with a YAML spec
        or a Seldon-style model class in the cell."""
        if cell is None:
            args = _deploy_parser("%deploy", cell=False).parse_args(shlex.split(line))
            model = self._variable(args.model)
            spec = {"model": model}
            return self._deploy(spec, args, default_name=args.model, deployment_id=args.id)
        args = _deploy_parser("%%deploy", cell=True).parse_args(shlex.split(line))
        source = cell.strip()
        if not source:
            raise MagicError("%%deploy needs a YAML spec or a model class in the cell")
        if re.search(r"^\s*class\s+\w+", source, re.M) and "def predict" in source:
            return self._deploy_class(source, args)
        try:
            document = yaml.safe_load(source)
        except yaml.YAMLError as error:
            raise MagicError(f"the cell is neither a model class nor valid YAML: {error}") from None
        if not isinstance(document, dict):
            raise MagicError("the cell must hold a YAML mapping (a deployment spec)")
        return self._deploy(document, args, default_name=None, deployment_id=args.id)

    def _evaluate(self, expression: str) -> Any:
        try:
            if self.shell is not None:
                return self.shell.ev(expression)
            return eval(expression)  # a notebook expression the user typed
        except Exception as error:
            raise MagicError(f"cannot evaluate '{expression}': {error}") from None

    def _variable(self, name: str) -> Any:
        namespace = self.shell.user_ns if self.shell is not None else {}
        if name not in namespace:
            raise MagicError(f"no variable '{name}' in the notebook")
        return namespace[name]

    def _group(self, wanted: str | None) -> dict[str, Any]:
        groups = self.client.groups()
        if wanted:
            for group in groups:
                if group["name"] == wanted:
                    return group
            raise MagicError(
                f"group '{wanted}' not found; yours: {', '.join(g['name'] for g in groups) or '-'}"
            )
        enabled = [g for g in groups if g["enabledDeployment"]]
        if not enabled:
            raise MagicError(
                "none of your groups has model deployment enabled; ask your administrator"
            )
        return enabled[0]

    def _deploy(
        self,
        document: dict[str, Any],
        args: argparse.Namespace,
        *,
        default_name: str | None,
        deployment_id: str | None,
        package_kwargs: dict[str, Any] | None = None,
    ) -> Deployment:
        flat = _flatten_document(document)
        name = args.name or flat.pop("name", None) or default_name or deployment_id
        if not name:
            raise MagicError("give the deployment a name (--name or 'name:' in the spec)")
        group = self._group(args.group or flat.pop("group", None))
        model = flat.pop("model", None)
        if isinstance(model, str):
            model = self._variable(model)
        sample = flat.pop("sample", None)
        if args.sample:
            sample = self._evaluate(" ".join(args.sample))
        if model is not None:
            extra = dict(package_kwargs or {"files": args.files or None})
            extra.setdefault("sample_input", sample)
            flat["predictor"]["modelURI"] = package_for_deploy(model, name, **extra)
        predictor = flat["predictor"]
        if args.instance_type:
            predictor["instanceType"] = args.instance_type
        if args.replicas is not None:
            predictor["replicas"] = args.replicas
        if args.metadata:
            predictor["metadata"] = {**predictor.get("metadata", {}), **_metadata(args.metadata)}
        spec = flat["spec"]
        if args.description is not None:
            spec["description"] = args.description
        if args.private or args.public:
            spec.setdefault("endpoint", {})["accessType"] = "private" if args.private else "public"
        policy = shared.policy_patch(args.policy_groups, args.policy_users)
        if policy is not None:
            spec.setdefault("endpoint", {}).update(policy)
        message = args.update_message
        existing = self._existing(deployment_id, name, group["name"])
        if existing is not None:
            patch = {**spec, "predictors": [predictor]}
            patch.pop("groupName", None)
            patch.pop("displayName", None)
            deployment = Deployment(
                self.client.update(
                    existing["id"], patch, update_message=message or "updated from the notebook"
                ),
                self.client,
            )
        else:
            predictor.setdefault("replicas", 1)
            if "instanceType" not in predictor:
                types = group.get("instanceTypes") or []
                if not types:
                    raise MagicError(f"group '{group['name']}' has no instance types")
                predictor["instanceType"] = types[0]["name"]
            if not (predictor.get("modelURI") or predictor.get("modelImage")):
                raise MagicError("give a model: a notebook variable, modelURI or modelImage")
            body = {
                **spec,
                "displayName": name,
                "groupName": group["name"],
                "predictors": [predictor],
            }
            if message:
                body["updateMessage"] = message
            deployment = Deployment(self.client.create(body, id=deployment_id), self.client)
        if not args.wait:
            return deployment
        try:
            deployment.wait(timeout=args.timeout)
        except (DeploymentFailed, WaitTimeout) as error:
            raise MagicFailed(f"{error.message} (see %phlogs {deployment.id})") from None
        return deployment

    def _existing(self, deployment_id: str | None, name: str, group: str) -> dict | None:
        if deployment_id:
            try:
                return self.client.get(deployment_id)
            except PrimeHubError as error:
                if error.status == 404:
                    return None
                raise
        for candidate in self.client.list(name=name, group=group):
            if candidate["spec"]["displayName"] == name:
                return candidate
        return None

    def _deploy_class(self, source: str, args: argparse.Namespace) -> Deployment:
        """Define the cell's class in the notebook, package it with its files, deploy it."""
        namespace = self.shell.user_ns if self.shell is not None else {}
        before = set(namespace)
        exec(compile(source, "<%%deploy cell>", "exec"), namespace)
        classes = [
            value
            for key, value in namespace.items()
            if isinstance(value, type)
            and callable(getattr(value, "predict", None))
            and (key not in before or value.__module__ in ("__main__", "builtins"))
            and re.search(rf"^\s*class\s+{re.escape(value.__name__)}\b", source, re.M)
        ]
        if not classes:
            raise MagicError("the cell defines no class with a predict() method")
        model_class = classes[-1]
        files = list(args.files or []) + list(getattr(model_class, "artifacts", []) or [])
        name = args.name or model_class.__name__
        # A class typed in a cell has no source file: the cell becomes the bundle's module.
        source_file = self._bundle_source(name, source)
        return self._deploy(
            {"model": source_file},  # a Path: the packager reads the class from it
            args,
            default_name=name,
            deployment_id=args.id,
            package_kwargs={
                "files": files or None,
                "model_class": model_class.__name__,
                "sample_input": (
                    self._evaluate(" ".join(args.sample))
                    if args.sample
                    else getattr(model_class, "sample_input", None)
                ),
            },
        )

    def _bundle_source(self, name: str, source: str) -> Path:
        slug = re.sub(r"[^a-zA-Z0-9]+", "_", name).strip("_").lower() or "model"
        folder = Path.cwd() / ".primehub" / "sources"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{slug}.py"
        path.write_text(source + "\n")
        return path

    # ---- %phlogs ----------------------------------------------------------------------

    @line_magic
    @_friendly
    def phlogs(self, line: str) -> None:
        """`%phlogs ID [--replica N] [--tail N] [--follow]`: logs, newest last, UTC times."""
        args = self._one_id(
            shlex.split(line), "%phlogs", shared.REPLICA, shared.TAIL, shared.FOLLOW
        )
        tail = None if args.tail == "all" else int(args.tail)
        if not args.follow:
            sys.stdout.write(self.client.logs(args.id, replica=args.replica, tail=tail))
            return
        lines = self.client.follow_logs(args.id, replica=args.replica, tail=tail or 0)
        try:
            for text in lines:
                print(text, flush=True)
        except KeyboardInterrupt:
            print("(stopped following)")
        finally:
            lines.close()  # closes the HTTP response: no connection is left open

    # ---- %phdeploy --------------------------------------------------------------------

    @line_magic
    @_friendly
    def phdeploy(self, line: str) -> Any:
        """`%phdeploy COMMAND ...`: list, get, history, diff, rollback, compare, promote, stop,
        start, delete, wait, invoke, clients, metrics, batch, jobs, job, cancel-job
        (`%phdeploy help`)."""
        invoked = _INVOKE_LINE.fullmatch(line)
        if invoked:  # the expression as typed: shlex would eat its quotes (df[df.c == "a"])
            options = shlex.split(invoked["before"] + " " + invoked["after"])
            return self._ph_invoke([invoked["id"], *options], invoked["expression"])
        words = shlex.split(line)
        if not words or words[0] in ("-h", "--help", "help"):
            print(PHDEPLOY_HELP)
            return None
        command, rest = words[0], words[1:]
        handler = getattr(self, f"_ph_{command.replace('-', '_')}", None)
        if handler is None:
            raise MagicError(f"unknown command '{command}'; try: %phdeploy help")
        return handler(rest)

    def _ph_list(self, rest: list[str]) -> Any:
        parser = _Parser(prog="%phdeploy list")
        shared.add_options(parser, shared.NAME_FILTER, shared.GROUP_FILTER, shared.MINE)
        args = parser.parse_args(rest)
        items = self.client.list(name=args.name, mine=args.mine, group=args.group)
        return DeploymentList(items)

    def _one_id(self, rest: list[str], prog: str, *options: shared.Option) -> argparse.Namespace:
        parser = _Parser(prog=prog)
        parser.add_argument("id")
        return shared.add_options(parser, *options).parse_args(rest)

    def _ph_get(self, rest: list[str]) -> Deployment:
        args = self._one_id(rest, "%phdeploy get")
        return Deployment(self.client.get(args.id), self.client)

    def _ph_history(self, rest: list[str]) -> Table:
        args = self._one_id(rest, "%phdeploy history")
        rows = []
        for entry in self.client.history(args.id):
            spec = entry["spec"]
            p = spec["predictors"][0]
            rows.append([
                entry["revision"], local_time(entry["time"]), entry["user"],
                entry.get("updateMessage", ""), "Yes" if spec.get("stop") else "No",
                p.get("modelImage") or p.get("modelURI"), replica_range(p), p["instanceType"],
                display_value("endpoint.accessType", spec["endpoint"]["accessType"]),
                spec.get("description", ""),
                ", ".join(f"{k}={v}" for k, v in p.get("metadata", {}).items()),
            ])  # fmt: skip
        headers = ["Revision", "Time", "User", field_label("updateMessage"), field_label("stop"),
                   "Model Image / URI", field_label("replicas"), field_label("instanceType"),
                   field_label("endpoint.accessType"), field_label("description"),
                   field_label("metadata")]  # fmt: skip
        return Table(headers, rows)

    def _ph_diff(self, rest: list[str]) -> Table:
        parser = _Parser(prog="%phdeploy diff")
        parser.add_argument("id")
        parser.add_argument("rev_a", type=int)
        parser.add_argument("rev_b", type=int)
        args = parser.parse_args(rest)
        a = self.client.history_entry(args.id, args.rev_a)["spec"]
        b = self.client.history_entry(args.id, args.rev_b)["spec"]
        # Between two revisions, who changed it and why are part of the answer.
        rows = [list(change) for change in describe_changes(a, b, ignore=frozenset())]
        if not rows:
            rows = [["(no difference)", "", ""]]
        return Table(["Field", f"Revision {args.rev_a}", f"Revision {args.rev_b}"], rows)

    def _ph_rollback(self, rest: list[str]) -> Deployment:
        parser = _Parser(prog="%phdeploy rollback")
        parser.add_argument("id")
        parser.add_argument("revision", type=int)
        shared.add_options(
            parser,
            shared.MESSAGE.but(flags=("-m", "--update-message")),
            shared.wait_switch("Deployed", default=True),
        )
        args = parser.parse_args(rest)
        deployment = Deployment(
            self.client.rollback(args.id, args.revision, args.update_message), self.client
        )
        return self._wait(deployment, "Deployed") if args.wait else deployment

    def _ph_compare(self, rest: list[str]) -> CompareView:
        args = self._one_id(rest, "%phdeploy compare")
        return CompareView(self.client.compare(args.id))

    def _ph_promote(self, rest: list[str]) -> Deployment:
        parser = _Parser(prog="%phdeploy promote")
        parser.add_argument("id")
        parser.add_argument("predictor", help="the predictor to send every request to")
        shared.add_options(
            parser,
            shared.MESSAGE.but(flags=("-m", "--update-message")),
            shared.wait_switch("Deployed", default=True),
        )
        args = parser.parse_args(rest)
        data = self.client.promote(args.id, args.predictor, args.update_message)
        deployment = Deployment(data, self.client)
        return self._wait(deployment, "Deployed") if args.wait else deployment

    def _wait(self, deployment: Deployment, phase: str, timeout: float = 600) -> Deployment:
        try:
            deployment.wait(phase, timeout=timeout)
        except (DeploymentFailed, WaitTimeout) as error:
            raise MagicFailed(f"{error.message} (see %phlogs {deployment.id})") from None
        return deployment

    def _lifecycle(self, rest: list[str], verb: str, phase: str) -> Deployment:
        args = self._one_id(rest, f"%phdeploy {verb}", shared.wait_switch(phase, default=True))
        data = (self.client.stop if verb == "stop" else self.client.start)(args.id)
        deployment = Deployment(data, self.client)
        return self._wait(deployment, phase) if args.wait else deployment

    def _ph_stop(self, rest: list[str]) -> Deployment:
        return self._lifecycle(rest, "stop", "Stopped")

    def _ph_start(self, rest: list[str]) -> Deployment:
        return self._lifecycle(rest, "start", "Deployed")

    def _ph_delete(self, rest: list[str]) -> None:
        args = self._one_id(rest, "%phdeploy delete")
        self.client.delete(args.id)
        print(f"{args.id}: deleted")

    def _ph_wait(self, rest: list[str]) -> Deployment:
        args = self._one_id(rest, "%phdeploy wait", shared.WAIT_PHASE, shared.TIMEOUT)
        return self._wait(
            Deployment(self.client.get(args.id), self.client), args.phase, args.timeout
        )

    def _ph_invoke(self, rest: list[str], expression: str | None = None) -> Any:
        """Predictions for a notebook expression: a DataFrame (sent with its column names and
        types; answered as a DataFrame of the model's output columns when it names them), a
        numpy array or a list."""
        parser = _Parser(prog="%phdeploy invoke")
        parser.add_argument("id")
        if expression is None:
            parser.add_argument(
                "data", nargs="+", help="a notebook expression: list, array, DataFrame"
            )
        parser.add_argument("--raw", action="store_true", help="return the whole JSON response")
        args = shared.add_options(parser, shared.API_PATH).parse_args(rest)
        data = self._evaluate(expression if expression is not None else " ".join(args.data))
        response = self.client.invoke(args.id, to_payload(data, args.api_path), path=args.api_path)
        return response if args.raw else from_response(response, data)

    def _ph_clients(self, rest: list[str]) -> Any:
        parser = _Parser(prog="%phdeploy clients")
        parser.add_argument("id")
        parser.add_argument("action", nargs="?", choices=["add", "delete"])
        parser.add_argument("name", nargs="?")
        args = parser.parse_args(rest)
        if args.action is None:
            return Table(["client"], [[c["name"]] for c in self.client.clients(args.id)])
        if not args.name:
            raise MagicError(f"%phdeploy clients ID {args.action} NAME: give the client's name")
        if args.action == "delete":
            self.client.delete_client(args.id, args.name)
            print(f"client {args.name}: deleted")
            return None
        return NewClient(self.client.add_client(args.id, args.name))

    def _ph_metrics(self, rest: list[str]) -> MetricsView:
        # Charts in a notebook read better with finer points than the CLI's table rows.
        step = shared.STEP.but(default=15)
        args = self._one_id(rest, "%phdeploy metrics", shared.WINDOW, step)
        return MetricsView(self.client.metrics(args.id, window=args.window, step=args.step))


# `invoke ID EXPRESSION`, with --raw / --path before or after the expression.
_INVOKE_OPTIONS = r"(?:\s+(?:--raw|--path(?:=|\s+)\S+))*"
_INVOKE_LINE = re.compile(
    rf"\s*invoke\s+(?P<id>[a-z][-a-z0-9]*)(?P<before>{_INVOKE_OPTIONS})\s+"
    rf"(?P<expression>(?!-).+?)(?P<after>{_INVOKE_OPTIONS})\s*",
    re.DOTALL,
)

PHDEPLOY_HELP = """%phdeploy COMMAND ...
  list [--name N] [--group G] [--mine]     deployments of your groups
  get ID                                   one deployment (a card)
  history ID                               every change, newest first
  diff ID REV_A REV_B                      what changed between two history entries
  rollback ID REV [-m MESSAGE]             re-apply revision REV's spec as a new update
  compare ID                               predictors side by side, with a significance test
  promote ID PREDICTOR [-m MESSAGE]        send every request to PREDICTOR, remove the others
  stop ID | start ID | delete ID           lifecycle ([--no-wait] for stop/start)
  wait ID [--for PHASE] [--timeout S]      wait for a phase
  invoke ID EXPR [--raw] [--path P]        predictions for a DataFrame, numpy array or list
  clients ID [add NAME | delete NAME]      clients of a private endpoint
  metrics ID [--window S] [--step S]       requests/s, errors, latency and reward charts
  batch ID INPUT [-o OUTPUT] [--format F]  score a file in a job, with its live progress
        [--predictor P] [--chunk-rows N] [--output-columns all|predictions] [--overwrite]
  jobs ID                                  batch jobs, newest first
  job ID JOB [--logs]                      one job (or its log)
  cancel-job ID JOB                        cancel a running job (remove a finished one)"""


def _flatten_document(document: dict[str, Any]) -> dict[str, Any]:
    """Accept a bare spec, `{spec: ...}`, a PhDeployment, or the short form
    (name, group, model / modelURI / modelImage, replicas, instanceType, metadata, ...)."""
    document = dict(document)
    if "spec" in document and isinstance(document["spec"], dict):
        spec = dict(document["spec"])
        name = (
            document.get("metadata", {}).get("name")
            if isinstance(document.get("metadata"), dict)
            else None
        )
        document = {**spec, **({"id": name} if name else {})}
    predictors = document.pop("predictors", None)
    predictor = dict(predictors[0]) if predictors else {}
    short = {
        "modelURI": "modelURI", "modelImage": "modelImage", "replicas": "replicas",
        "instanceType": "instanceType", "metadata": "metadata",
        "imagePullSecret": "imagePullSecret",
    }  # fmt: skip
    for key, target in short.items():
        if key in document:
            predictor[target] = document.pop(key)
    model = document.pop("model", None) or predictor.pop("model", None)
    name = document.pop("name", None) or document.pop("displayName", None)
    group = document.pop("group", None) or document.pop("groupName", None)
    access = document.pop("accessType", None)
    if access:
        document.setdefault("endpoint", {})["accessType"] = access
    if document.pop("private", False):
        document.setdefault("endpoint", {})["accessType"] = "private"
    if "policy" in document:  # `policy: {groups: [...], users: [...]}` at the top
        document.setdefault("endpoint", {})["policy"] = document.pop("policy")
    document.pop("id", None)
    return {"spec": document, "predictor": predictor, "model": model, "name": name, "group": group}


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext primehub_jupyter`."""
    ipython.register_magics(DeploymentMagics)
