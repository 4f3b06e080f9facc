"""Model bundles: the bundle.yaml descriptor, `load_bundle()` and `package()`."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic.alias_generators import to_camel

from .errors import BundleError, PackagingError

if TYPE_CHECKING:
    from .runtimes.base import ModelFacts

FORMAT_VERSION = 1
DESCRIPTOR_FILE = "bundle.yaml"
REQUIREMENTS_FILE = "requirements.txt"
#: At most this many rows of `sample_input` are kept in bundle.yaml (it is an example, not data).
SAMPLE_ROWS = 3

_CREATE_HINT = "create one with primehub_jupyter.package(model, path)"


class _Dumper(yaml.SafeDumper):
    """Writes lists of scalars on one line ([-1, 4]) so bundle.yaml stays short and readable."""


def _represent_list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    flow = all(not isinstance(item, (list, dict)) for item in items) or all(
        isinstance(item, list) and all(not isinstance(v, (list, dict)) for v in item)
        for item in items
    )
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


class _CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class TensorSpec(_CamelModel):
    """One named input or output of the model: datatype and shape (-1 = any size)."""

    name: str
    datatype: str
    shape: list[int]


class Signature(_CamelModel):
    """The model's inputs and outputs."""

    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)


class Sample(_CamelModel):
    """A Seldon v1 request and the response the model gave to it when it was packaged."""

    request: dict[str, Any]
    response: dict[str, Any] | None = None


class BundleDescriptor(_CamelModel):
    """The contents of bundle.yaml (camelCase on disk, snake_case attributes in Python)."""

    # Unknown keys are kept rather than rejected so an older server can still serve a bundle
    # written by a newer packager of the same formatVersion; load_bundle() warns about them.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    format_version: int = FORMAT_VERSION
    name: str = Field(min_length=1)
    framework: str = Field(min_length=1)
    runtime: str = Field(min_length=1)
    artifact: str = Field(min_length=1)
    framework_version: str | None = None
    predict_method: str | None = None
    class_names: list[str] | None = None
    signature: Signature | None = None
    sample: Sample | None = None
    created_at: str | None = None

    _bundle_dir: Path | None = PrivateAttr(default=None)

    @property
    def bundle_dir(self) -> Path | None:
        """The directory this descriptor was loaded from, when it came from `load_bundle()`."""
        return self._bundle_dir

    def to_yaml(self) -> str:
        """Serialize as bundle.yaml text (camelCase keys, unset fields left out)."""
        data = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def load_bundle(path: str | os.PathLike[str]) -> BundleDescriptor:
    """Read and check `<path>/bundle.yaml` (or the bundle.yaml file itself).

    Raises BundleError with a message that says how to fix the bundle: no bundle.yaml, invalid
    YAML or fields, a newer formatVersion, an unknown runtime, or a missing artifact.
    """
    from .runtimes import get_runtime_class

    bundle_dir = Path(path).expanduser()
    if bundle_dir.name == DESCRIPTOR_FILE and bundle_dir.is_file():
        bundle_dir = bundle_dir.parent
    bundle_dir = bundle_dir.absolute()
    if not bundle_dir.exists():
        raise BundleError(f"model bundle {bundle_dir} does not exist; {_CREATE_HINT}")
    if not bundle_dir.is_dir():
        raise BundleError(
            f"{bundle_dir} is a file, but a model bundle is a directory with {DESCRIPTOR_FILE}; "
            f"{_CREATE_HINT}"
        )
    descriptor_path = bundle_dir / DESCRIPTOR_FILE
    if not descriptor_path.is_file():
        raise BundleError(
            f"no {DESCRIPTOR_FILE} in {bundle_dir}: is this a model bundle? {_CREATE_HINT}"
        )
    try:
        data = yaml.safe_load(descriptor_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BundleError(f"{descriptor_path} is not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read {descriptor_path}: {exc}") from None
    if not isinstance(data, dict):
        raise BundleError(
            f"{descriptor_path} must be a YAML mapping with name, framework, runtime and "
            f"artifact keys; {_CREATE_HINT}"
        )

    version = data.get("formatVersion", FORMAT_VERSION)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise BundleError(
            f"{descriptor_path} has formatVersion {version}, newer than this server reads "
            f"({FORMAT_VERSION}): upgrade primehub-jupyter where the model server runs"
        )
    try:
        descriptor = BundleDescriptor.model_validate(data)
    except ValidationError as exc:
        raise BundleError(f"{descriptor_path} is invalid: {_describe_errors(exc)}") from None
    if descriptor.format_version != FORMAT_VERSION:
        raise BundleError(
            f"{descriptor_path} has formatVersion {descriptor.format_version}; "
            f"this server reads formatVersion {FORMAT_VERSION}"
        )

    try:
        get_runtime_class(descriptor.runtime)
    except BundleError as exc:
        raise BundleError(f"{descriptor_path}: {exc}") from None

    artifact = (bundle_dir / descriptor.artifact).resolve()
    if not artifact.is_relative_to(bundle_dir.resolve()):
        raise BundleError(
            f"{descriptor_path}: artifact {descriptor.artifact!r} points outside the bundle; "
            "it must be a path relative to the bundle directory"
        )
    if not artifact.is_file():
        raise BundleError(
            f"artifact {descriptor.artifact} not found in {bundle_dir} (named by "
            f"{DESCRIPTOR_FILE}): copy the whole bundle directory, or package the model again"
        )
    if descriptor.model_extra:
        print(
            f"warning: {descriptor_path}: ignoring unknown keys "
            f"{', '.join(sorted(descriptor.model_extra))} (written by a newer primehub-jupyter?)",
            file=sys.stderr,
        )
    descriptor._bundle_dir = bundle_dir
    return descriptor


def _describe_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def package(
    model: Any,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    sample_input: Any = None,
    predict_method: str | None = None,
    class_names: list[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a model bundle for `model` into the directory `path` and return its path.

    `model` is a fitted scikit-learn estimator or pipeline, or the path of a .joblib/.pkl file
    holding one. The bundle records the framework version, pinned requirements, the predict
    method (predict_proba when the model has it), class names, the input/output signature and a
    sample request with the response the serving runtime actually gave to it (`sample_input`,
    default a row of zeros). An existing non-empty `path` is replaced only with
    `overwrite=True`, and only when it already holds a bundle.
    """
    from .runtimes import find_packager, packagers

    target = Path(path).expanduser().absolute()
    _check_target(target, overwrite)

    source_file: Path | None = None
    if isinstance(model, (str, os.PathLike)):
        source_file = Path(model).expanduser().absolute()
        model = _read_model_file(source_file)
    packager = find_packager(model)
    if packager is None:
        supported = "; ".join(p.description for p in packagers())
        suffixes = sorted({s for p in packagers() for s in p.file_suffixes})
        raise PackagingError(
            f"cannot package a {type(model).__module__}.{type(model).__qualname__}: supported "
            f"are {supported}, or the path of a {'/'.join(suffixes)} file holding one"
        )
    facts = packager.inspect(model, predict_method=predict_method, class_names=class_names)

    staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        artifact = packager.save(model, staging, source_file)
        descriptor = _describe(staging, artifact, facts, name or target.name, sample_input)
        (staging / DESCRIPTOR_FILE).write_text(descriptor.to_yaml(), encoding="utf-8")
        requirements = "".join(line + "\n" for line in facts.requirements)
        (staging / REQUIREMENTS_FILE).write_text(
            "# pinned from the environment that packaged the model\n" + requirements,
            encoding="utf-8",
        )
        load_bundle(staging)
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _check_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise PackagingError(f"{target} is a file; give package() a directory path for the bundle")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not overwrite:
        raise PackagingError(
            f"{target} already exists and is not empty: pass overwrite=True to replace the "
            "bundle there, or choose another path"
        )
    if not (target / DESCRIPTOR_FILE).is_file():
        # Never delete a directory we did not write: overwrite replaces bundles only.
        raise PackagingError(
            f"{target} is not empty and is not a model bundle (no {DESCRIPTOR_FILE}), so "
            "overwrite=True will not delete it: choose another path"
        )


def _read_model_file(source: Path) -> Any:
    from .runtimes import packagers

    if not source.is_file():
        raise PackagingError(f"model file {source} does not exist")
    suffix = source.suffix.lower()
    for packager in packagers():
        if suffix in packager.file_suffixes:
            try:
                return packager.load_file(source)
            except Exception as exc:
                raise PackagingError(f"cannot read {source}: {type(exc).__name__}: {exc}") from exc
    suffixes = sorted({s for p in packagers() for s in p.file_suffixes})
    raise PackagingError(
        f"cannot package {source}: unsupported file type {suffix or '(none)'}; "
        f"supported are {', '.join(suffixes)}"
    )


def _describe(
    bundle_dir: Path, artifact: str, facts: ModelFacts, name: str, sample_input: Any
) -> BundleDescriptor:
    """Build the descriptor, running the real runtime on the sample to record its response."""
    import numpy as np

    from .protocols import seldon
    from .runtimes import load_runtime
    from .runtimes.base import datatype_of

    rows, names = _sample_rows(sample_input, facts)
    n_features = rows.shape[1]
    if facts.n_features is not None and n_features != facts.n_features:
        raise PackagingError(
            f"sample_input has {n_features} columns but the model expects {facts.n_features}"
        )
    descriptor = BundleDescriptor(
        name=name,
        framework=facts.framework,
        runtime=facts.runtime,
        artifact=artifact,
        framework_version=facts.framework_version,
        predict_method=facts.predict_method,
        class_names=facts.class_names,
        signature=Signature(
            inputs=[TensorSpec(name="input-0", datatype="FP64", shape=[-1, n_features])]
        ),
        created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    runtime = load_runtime(bundle_dir, descriptor)
    try:
        output = runtime.predict(runtime.check_input(rows, names), names, {})
    except Exception as exc:
        raise PackagingError(
            f"the model failed on the sample input ({type(exc).__name__}: {exc}); "
            "pass a valid row as sample_input="
        ) from exc
    output = np.asarray(output)
    descriptor.signature.outputs = [  # type: ignore[union-attr]
        TensorSpec(name="output-0", datatype=datatype_of(output), shape=[-1, *output.shape[1:]])
    ]
    request_data: dict[str, Any] = {"ndarray": rows.tolist()}
    if names:
        request_data = {"names": names, **request_data}
    response = seldon.response_dict(output, seldon.NDARRAY, runtime.class_names, {})
    descriptor.sample = Sample(
        request={"data": request_data},
        # A JSON round trip turns numpy values into plain numbers that YAML can write.
        response=_plain(seldon.dumps(response)),
    )
    return descriptor


def _plain(encoded: bytes) -> dict[str, Any]:
    import orjson

    return dict(orjson.loads(encoded))


def _sample_rows(sample_input: Any, facts: ModelFacts) -> tuple[Any, list[str] | None]:
    import numpy as np

    names = facts.feature_names
    if sample_input is None:
        if facts.n_features is None:
            raise PackagingError(
                "cannot tell how many input features the model takes: pass sample_input= "
                "with one or more example rows"
            )
        return np.zeros((1, facts.n_features)), names
    columns = getattr(sample_input, "columns", None)
    if columns is not None:  # a DataFrame: keep its column names as the feature names
        names = [str(c) for c in columns]
        sample_input = sample_input.to_numpy()
    try:
        rows = np.asarray(sample_input, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PackagingError(
            f"sample_input must be numeric rows (a list of lists, an array or a DataFrame): {exc}"
        ) from None
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise PackagingError(
            f"sample_input must be one or more rows of features, got shape {list(rows.shape)}"
        )
    return rows[:SAMPLE_ROWS], names


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        staging.rename(target)
        return
    # Swap through a sibling name so a failure never leaves the target half-written.
    retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    target.rename(retired)
    try:
        staging.rename(target)
    except BaseException:
        retired.rename(target)
        raise
    shutil.rmtree(retired, ignore_errors=True)
