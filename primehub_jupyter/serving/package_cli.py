"""`primehub-deploy package`: package a saved model, build its image, test it locally."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import click


class _FrameworkChoice(click.Choice):
    """The framework names registered as packager plugins, read when the option is used.

    Reading them when the CLI module is imported would scan package metadata on every command.
    """

    def __init__(self) -> None:
        super().__init__([])

    @property  # type: ignore[override]
    def choices(self) -> list[str]:
        from .registry import frameworks

        return frameworks()

    @choices.setter
    def choices(self, value: Any) -> None:
        pass  # click.Choice.__init__ assigns it; the registry is the source


# NAME[:TAG] with an optional registry host[:port]/ and path; lowercase repository.
_IMAGE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)
_DEFAULT = "create"


class PackageError(click.ClickException):
    """One readable line on stderr and exit code 1, never a traceback."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class _PackageGroup(click.Group):
    """A group whose bare form `package MODEL -o BUNDLE` runs the `create` subcommand.

    Anything that is not a subcommand name (or --help) is taken as the model to package, so
    existing scripts keep working.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [_DEFAULT, *args]
        return super().parse_args(ctx, args)


@click.group(
    "package",
    cls=_PackageGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
def package_group() -> None:
    """Package a model as a bundle, build its image, test it locally.

    \b
      primehub-deploy package MODEL -o BUNDLE        (same as: package create MODEL -o BUNDLE)
      primehub-deploy package build BUNDLE --image NAME[:TAG] [--push]
      primehub-deploy package test BUNDLE
    """


@package_group.command(_DEFAULT)
@click.argument("model")
@click.option("-o", "--output", "out", required=True, type=click.Path(), help="Bundle folder.")
@click.option("--name", help="Model name (default: the model file's name).")
@click.option(
    "--sample",
    help="Sample input as JSON, e.g. '[[5.1, 3.5, 1.4, 0.2]]' (or @file.json); "
    "custom models also take a JSON string or object.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle.")
@click.option("--framework", type=_FrameworkChoice(), help="Do not detect the framework: use this.")
@click.option(
    "--predict-method",
    help="What to serve: predict_proba/predict, an ONNX output, a SavedModel signature.",
)
@click.option("--class-names", help="Comma-separated names of the output classes.")
@click.option("--model-class", help="Class in the .py file (custom) or the nn.Module class.")
@click.option(
    "--source",
    type=click.Path(exists=True, dir_okay=False),
    help="The .py file defining the nn.Module of a state dict (or Keras custom objects).",
)
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(exists=True),
    help="A file or folder the custom model reads (repeatable).",
)
@click.option("--init-kwargs", help="Constructor arguments as a JSON object.")
@click.option(
    "--requirement", "requirements", multiple=True, help="Extra requirement line (repeatable)."
)
def create_command(
    model: str,
    out: str,
    name: str | None,
    sample: str | None,
    overwrite: bool,
    framework: str | None,
    predict_method: str | None,
    class_names: str | None,
    model_class: str | None,
    source: str | None,
    files: tuple[str, ...],
    init_kwargs: str | None,
    requirements: tuple[str, ...],
) -> None:
    """Package MODEL (a saved model file or directory, or an MLflow URI) as a bundle."""
    from .errors import BundleError
    from .packaging import package

    kwargs = _json_option(init_kwargs, "--init-kwargs") if init_kwargs else None
    if kwargs is not None and not isinstance(kwargs, dict):
        raise PackageError("--init-kwargs must be a JSON object")
    try:
        path = package(
            model,
            out,
            name=name or Path(model.rstrip("/")).stem or None,
            sample_input=_json_option(sample, "--sample") if sample else None,
            overwrite=overwrite,
            framework=framework,
            predict_method=predict_method,
            class_names=[c.strip() for c in class_names.split(",")] if class_names else None,
            model_class=model_class,
            source=source,
            files=list(files),
            init_kwargs=kwargs,
            requirements=list(requirements),
        )
    except (BundleError, ValueError, TypeError) as error:
        raise PackageError(str(error)) from None
    click.echo(f"bundle written to {path}")
    click.echo(f"deploy it with modelURI: {Path(path).resolve()}")
    click.echo(f"test it:   primehub-deploy package test {path}")
    click.echo(f"image:     primehub-deploy package build {path} --image NAME[:TAG] [--push]")


def _json_option(value: str, option: str) -> Any:
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as error:
            raise PackageError(f"{option}: cannot read {value[1:]}: {error}") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise PackageError(f"{option} is not valid JSON: {error}") from None


@package_group.command("build")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--image", required=True, help="Image name, NAME[:TAG] (with a registry to push).")
@click.option("--push", is_flag=True, help="Push the image after building it.")
@click.option(
    "--builder",
    type=click.Choice(["docker", "podman", "buildah"]),
    help="Use this builder (default: the first of docker, podman, buildah that works).",
)
@click.option(
    "--require-builder",
    is_flag=True,
    help="Exit with 1 when no builder works (default: print the commands and exit 0).",
)
def build_command(
    bundle: Path, image: str, push: bool, builder: str | None, require_builder: bool
) -> None:
    """Build the image of BUNDLE (its build/Dockerfile) and optionally push it.

    Uses docker, podman or buildah when one is installed and working; otherwise prints the
    exact commands to run where one is (exit code 0, or 1 with --require-builder).
    """
    from .bundle import load_bundle
    from .container import DOCKERFILE, build_commands, find_builder, shell_line
    from .container import write_build_context as write_context
    from .errors import BundleError

    if not _IMAGE.match(image):
        raise PackageError(
            f"--image {image!r} is not an image name: use NAME[:TAG], e.g. "
            "registry.example.com/team/iris:v1"
        )
    bundle = bundle.absolute()
    try:
        descriptor = load_bundle(bundle)
    except BundleError as error:
        raise PackageError(str(error)) from None
    if not (bundle / DOCKERFILE).is_file():  # bundles written before build contexts existed
        write_context(bundle, descriptor)
        click.echo(f"wrote the build context {bundle / DOCKERFILE}")

    found, probed = find_builder(builder)
    if found is None:
        for attempt in probed:
            click.echo(f"{attempt.problem}", err=True)
        click.echo("No image was built. Run these where a builder works:")
        names = [builder] if builder else ["docker", "podman", "buildah"]
        for index, name in enumerate(names):
            if index:
                click.echo(f"# or with {name}:")
            for command in build_commands(name, bundle, image, push):
                click.echo(f"  {shell_line(command)}")
        if require_builder:
            raise click.exceptions.Exit(1)
        return

    for command in build_commands(found.name, bundle, image, push):
        click.echo(f"$ {shell_line(command)}")
        result = subprocess.run([found.path or found.name, *command[1:]], check=False)
        if result.returncode != 0:
            raise PackageError(
                f"{found.name} {command[1]} failed with exit code {result.returncode}"
            )
    click.echo(f"built {image}" + (" and pushed it" if push else ""))
    click.echo(f"deploy it with modelImage: {image}")


@package_group.command("test")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--rtol", type=float, default=1e-4, show_default=True, help="Relative tolerance.")
@click.option("--atol", type=float, default=1e-6, show_default=True, help="Absolute tolerance.")
@click.option(
    "--timeout", type=float, default=180, show_default=True, help="Seconds to wait for loading."
)
def test_command(bundle: Path, rtol: float, atol: float, timeout: float) -> None:
    """Serve BUNDLE on 127.0.0.1, send its sample request and compare the answer.

    Prints the request, the recorded response and the server's response; exit code 0 when
    they match (numbers within the tolerances), 1 otherwise.
    """
    from .bundle_check import check_bundle
    from .errors import BundleError

    try:
        result = check_bundle(bundle, rtol=rtol, atol=atol, timeout=timeout)
    except BundleError as error:
        raise PackageError(str(error)) from None
    click.echo("request:")
    click.echo(_pretty(result.request))
    click.echo("recorded response:")
    click.echo(_pretty(result.expected))
    click.echo("server response:")
    click.echo(_pretty(result.actual) if result.actual is not None else "(none)")
    if result.ok:
        click.echo(f"OK: the response matches the recorded one (rtol={rtol}, atol={atol})")
        return
    if result.error:
        click.echo(f"FAILED: {result.error}", err=True)
        if result.server_log.strip():
            click.echo("server log:", err=True)
            click.echo(result.server_log.rstrip()[-4000:], err=True)
    else:
        click.echo("FAILED: the response differs from the recorded one:", err=True)
        for difference in result.differences:
            click.echo(f"  {difference}", err=True)
    raise click.exceptions.Exit(1)


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2)
