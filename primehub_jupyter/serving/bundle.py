"""Model bundles: the bundle.yaml descriptor, `load_bundle()` and `package()`."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic.alias_generators import to_camel

from .errors import BundleError, ModelLoadError, PackagingError

if TYPE_CHECKING:
    from .runtimes.base import ModelFacts, PackageOptions, Packager

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
    #: Custom Python and PyTorch state dicts: the class to instantiate, defined in `source`.
    model_class: str | None = None
    #: A Python file in the bundle (the class source; Keras custom objects).
    source: str | None = None
    #: Extra files the model reads (custom Python), relative to the bundle.
    files: list[str] | None = None
    #: Runtime-specific settings (e.g. the XGBoost wrapper class, the Keras backend).
    parameters: dict[str, Any] | None = None
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

    named = [("artifact", descriptor.artifact)]
    if descriptor.source:
        named.append(("source", descriptor.source))
    named += [("files", name) for name in descriptor.files or []]
    for field, relative in named:
        resolved = (bundle_dir / relative).resolve()
        if not resolved.is_relative_to(bundle_dir.resolve()):
            raise BundleError(
                f"{descriptor_path}: {field} {relative!r} points outside the bundle; "
                "it must be a path relative to the bundle directory"
            )
        if not resolved.exists():
            raise BundleError(
                f"{field} {relative} not found in {bundle_dir} (named by "
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
    framework: str | None = None,
    model_class: str | None = None,
    source: str | os.PathLike[str] | None = None,
    files: list[str | os.PathLike[str]] | None = None,
    init_kwargs: dict[str, Any] | None = None,
    requirements: list[str] | None = None,
) -> Path:
    """Write a model bundle for `model` into the directory `path` and return its path.

    `model` is a fitted object (scikit-learn, XGBoost, LightGBM, PyTorch, Keras 3, TensorFlow,
    ONNX), your own Python class (Seldon style), or the path of a saved model: a file (.joblib,
    .pkl, .json/.ubj, .txt, .pt, .keras/.h5, .onnx, .py) or a directory (MLflow model,
    TensorFlow SavedModel), or an MLflow runs:/ or models:/ URI. The framework is detected
    (most specific first) unless `framework` names it.

    The bundle holds the artifact in the framework's own format, bundle.yaml (framework,
    runtime, signature, and a sample request with the response the serving runtime actually
    gave to it: `sample_input`, default a row of zeros when the input shape is known),
    requirements.txt pinned from this environment (plus `requirements`), the class source for
    custom Python (plus `files`), and a container build context in build/. `predict_method`
    picks what to serve (a method such as predict_proba/predict, an ONNX output name, a
    SavedModel signature). `model_class`, `source` and `init_kwargs` describe a class to
    instantiate (custom Python; PyTorch state dicts). An existing non-empty `path` is
    replaced only with `overwrite=True`, and only when it already holds a bundle.
    """
    # Imported here: load_bundle() (used by the server and the engine) needs none of this.
    from .container import write_build_context
    from .runtimes.base import PackageOptions
    from .runtimes.common import merge_requirements

    target = Path(path).expanduser().absolute()
    _check_target(target, overwrite)
    options = PackageOptions(
        predict_method=predict_method,
        class_names=[str(n) for n in class_names] if class_names is not None else None,
        model_class=model_class,
        source=Path(source).expanduser().absolute() if source is not None else None,
        files=[Path(f).expanduser() for f in files or []],
        init_kwargs=dict(init_kwargs) if init_kwargs else None,
        requirements=[str(r).strip() for r in requirements or [] if str(r).strip()],
        sample_input=sample_input,
    )
    for extra in options.files:
        if not extra.exists():
            raise PackagingError(f"file {extra} (in files=) does not exist")

    with tempfile.TemporaryDirectory(prefix="primehub-package-") as scratch:
        source_file: Path | None = None
        if isinstance(model, (str, os.PathLike)):
            source_file = _local_path(model, Path(scratch))
            packager, model, keep_source = _read_model_path(source_file, framework, options)
            if not keep_source:
                source_file = None
        else:
            packager = _choose_packager(model, framework)
        facts = packager.inspect(model, options)
        facts.requirements = merge_requirements(facts.requirements, options.requirements)

        staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        # Loading the bundle to run its sample may put the staging directory on sys.path
        # (model sources import their siblings); it must not stay there in the caller.
        search_path = list(sys.path)
        try:
            artifact = packager.save(model, staging, source_file, options, facts)
            packager.describe_saved(staging, artifact, facts)
            descriptor = _describe(staging, artifact, facts, options, name or target.name)
            (staging / DESCRIPTOR_FILE).write_text(descriptor.to_yaml(), encoding="utf-8")
            (staging / REQUIREMENTS_FILE).write_text(
                "# pinned from the environment that packaged the model\n"
                + "".join(line + "\n" for line in facts.requirements),
                encoding="utf-8",
            )
            write_build_context(staging, descriptor)
            load_bundle(staging)
            _move_into_place(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            sys.path[:] = search_path
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


def _local_path(model: str | os.PathLike[str], scratch: Path) -> Path:
    """The model's path; MLflow model URIs (runs:/, models:/) are downloaded first."""
    from .runtimes.mlflow import URI, MlflowPackager

    text = os.fspath(model)
    path = Path(text).expanduser()
    if isinstance(text, str) and URI.match(text) and not path.exists():
        return MlflowPackager().download(text, scratch)
    return path.absolute()


def _unsupported(model: Any) -> PackagingError:
    from .runtimes import packagers, supported_models

    suffixes = sorted({s for p in packagers() for s in p.file_suffixes})
    hint = ""
    if callable(getattr(model, "predict", None)) and not isinstance(model, type):
        hint = (
            "; for your own Python class pass the class itself (package(MyModel, path)) or "
            "framework='custom'"
        )
    return PackagingError(
        f"cannot package a {type(model).__module__}.{type(model).__qualname__}: supported "
        f"are {supported_models()}, or the path of a saved model ({', '.join(suffixes)} file, "
        f"or an MLflow or SavedModel directory){hint}"
    )


def _choose_packager(model: Any, framework: str | None) -> Packager:
    from .runtimes import find_packager, packager_for

    if framework is None:
        packager = find_packager(model)
        if packager is None:
            raise _unsupported(model)
        return packager
    packager = packager_for(framework)
    # framework="custom" also takes an instance: its class is what gets packaged.
    if not packager.accepts(model) and not (
        packager.framework == "custom" and callable(getattr(model, "predict", None))
    ):
        raise PackagingError(
            f"framework={framework!r}, but the model is a {type(model).__module__}."
            f"{type(model).__qualname__}; that framework takes {packager.description}"
        )
    return packager


def _read_model_path(
    source: Path, framework: str | None, options: PackageOptions
) -> tuple[Packager, Any, bool]:
    """(packager, model, whether to copy the file as the artifact) for a saved model."""
    from .runtimes import packager_for, packagers

    if not source.exists():
        raise PackagingError(f"model file {source} does not exist")
    candidates = [packager_for(framework)] if framework is not None else packagers()
    packager = next((p for p in candidates if p.accepts_path(source)), None)
    if packager is None:
        raise _unreadable(source, framework, candidates)
    try:
        model = packager.load_file(source, options)
    except PackagingError:
        raise
    except Exception as exc:
        raise PackagingError(f"cannot read {source}: {type(exc).__name__}: {exc}") from exc
    if packager.container_format and framework is None:
        # A pickle may hold any framework's object: package it as what it is.
        detected = _choose_packager(model, None)
        return detected, model, detected is packager
    return packager, model, True


def _unreadable(source: Path, framework: str | None, candidates: list[Packager]) -> PackagingError:
    suffix = source.suffix.lower()
    if framework is not None:
        return PackagingError(
            f"{source} is not a saved {framework} model ({candidates[0].description})"
        )
    if source.is_dir():
        return PackagingError(
            f"cannot package the directory {source}: it is neither an MLflow model (no MLmodel "
            "file) nor a TensorFlow SavedModel (no saved_model.pb)"
        )
    owners = [p.framework for p in candidates if suffix in p.file_suffixes]
    if owners:
        return PackagingError(
            f"cannot package {source}: a {suffix} file that is not a saved "
            f"{' or '.join(owners)} model; pass framework= if it is one"
        )
    suffixes = sorted({s for p in candidates for s in p.file_suffixes})
    return PackagingError(
        f"cannot package {source}: unsupported file type {suffix or '(none)'}; "
        f"supported are {', '.join(suffixes)}"
    )


def _describe(
    bundle_dir: Path, artifact: str, facts: ModelFacts, options: PackageOptions, name: str
) -> BundleDescriptor:
    """Build the descriptor, running the real runtime on the sample to record its response."""
    import numpy as np

    from .protocols import seldon
    from .runtimes import load_runtime
    from .runtimes.base import datatype_of
    from .runtimes.custom import bundle_name, message_of

    sample = _Sample.make(options.sample_input, facts)
    descriptor = BundleDescriptor(
        name=name,
        framework=facts.framework,
        runtime=facts.runtime,
        artifact=artifact,
        framework_version=facts.framework_version,
        predict_method=facts.predict_method,
        class_names=facts.class_names,
        model_class=facts.model_class,
        source=facts.source if facts.source != artifact else None,
        files=[bundle_name(f) for f in options.files] or None,
        parameters=facts.parameters or None,
        signature=Signature(inputs=sample.input_specs(facts)),
        created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    try:
        runtime = load_runtime(bundle_dir, descriptor)
    except (BundleError, ModelLoadError) as exc:
        raise PackagingError(f"the packaged model does not load: {exc}") from exc
    try:
        response = runtime.predict_raw(sample.request)
        if response is None:
            X = runtime.check_input(sample.X, sample.names)
            output = runtime.predict(X, sample.names, {})
    except Exception as exc:
        raise PackagingError(
            f"the model failed on the sample input ({type(exc).__name__}: {exc}); "
            "pass a valid row as sample_input="
        ) from exc
    if descriptor.class_names is None and runtime.class_names:
        descriptor.class_names = list(runtime.class_names)
    if response is None:
        if isinstance(output, (str, bytes, dict)):
            response = {**message_of(output), "meta": {}}
        else:
            output = np.asarray(output)
            descriptor.signature.outputs = [  # type: ignore[union-attr]
                TensorSpec(
                    name="output-0", datatype=datatype_of(output), shape=[-1, *output.shape[1:]]
                )
            ]
            response = seldon.response_dict(output, seldon.NDARRAY, runtime.class_names, {})
    descriptor.sample = Sample(
        request=sample.request,
        # A JSON round trip turns numpy values into plain numbers that YAML can write.
        response=_plain(seldon.dumps(response)),
    )
    return descriptor


def _plain(encoded: bytes) -> dict[str, Any]:
    import orjson

    return dict(orjson.loads(encoded))


class _Sample:
    """The sample input as the server will see it: the request document and the decoded X."""

    def __init__(self, request: dict[str, Any], X: Any, names: list[str] | None) -> None:
        self.request = request
        self.X = X
        self.names = names

    @classmethod
    def make(cls, sample_input: Any, facts: ModelFacts) -> _Sample:
        import numpy as np

        shape = facts.sample_shape()
        names = facts.feature_names
        if sample_input is None:
            sample_input = facts.default_sample
        if sample_input is None:
            if shape is None or any(n < 0 for n in shape[1:]):
                raise PackagingError(
                    "cannot tell the shape of the model's input: pass sample_input= with one "
                    "or more example rows"
                )
            sample_input = np.zeros([1, *shape[1:]])
        if isinstance(sample_input, (str, bytes, dict)):
            if not facts.any_input:
                raise PackagingError(
                    f"sample_input must be numeric rows for a {facts.framework} model"
                )
            return cls._other(sample_input)

        columns = getattr(sample_input, "columns", None)
        if columns is not None:  # a DataFrame: keep its column names as the feature names
            names = [str(c) for c in columns]
            sample_input = sample_input.to_numpy()
        try:
            rows = np.asarray(sample_input)
        except ValueError as exc:
            raise PackagingError(f"sample_input is ragged: {exc}") from None
        if rows.dtype.kind in "biuf":
            rows = rows.astype(np.float64)
        elif not (facts.any_input and rows.dtype.kind in "US"):
            raise PackagingError(
                "sample_input must be numeric rows (a list of lists, an array or a DataFrame)"
                + (", a string, bytes or a dict" if facts.any_input else "")
            )
        if rows.ndim == 1 and rows.dtype.kind not in "US":
            rows = rows.reshape(1, -1)
        elif shape is not None and rows.ndim == len(shape) - 1:
            rows = rows.reshape(1, *rows.shape)
        if rows.ndim == 0 or rows.shape[0] == 0 or rows.size == 0:
            raise PackagingError(
                f"sample_input must be one or more rows of features, got shape {list(rows.shape)}"
            )
        if shape is not None and rows.dtype.kind == "f":
            _check_shape(rows, shape)
        rows = rows[:SAMPLE_ROWS]
        data: dict[str, Any] = {"ndarray": rows.tolist()}
        if names:
            data = {"names": names, **data}
        return cls({"data": data}, rows, names)

    @classmethod
    def _other(cls, value: str | bytes | dict[str, Any]) -> _Sample:
        import base64

        if isinstance(value, str):
            return cls({"strData": value}, value, None)
        if isinstance(value, bytes):
            return cls({"binData": base64.b64encode(value).decode("ascii")}, value, None)
        return cls({"jsonData": value}, value, None)

    def input_specs(self, facts: ModelFacts) -> list[TensorSpec]:
        """The signature's input: numeric arrays by shape and dtype; strings as BYTES."""
        import numpy as np

        if isinstance(self.X, np.ndarray) and self.X.dtype.kind == "f":
            shape = facts.sample_shape() or [-1, *self.X.shape[1:]]
            return [TensorSpec(name="input-0", datatype=facts.input_datatype, shape=shape)]
        if isinstance(self.X, (str, bytes)) or (
            isinstance(self.X, np.ndarray) and self.X.dtype.kind in "US"
        ):
            return [TensorSpec(name="input-0", datatype="BYTES", shape=[-1])]
        return []


def _check_shape(rows: Any, shape: list[int]) -> None:
    if rows.ndim == 2 and len(shape) == 2 and shape[1] >= 0 and rows.shape[1] != shape[1]:
        raise PackagingError(
            f"sample_input has {rows.shape[1]} columns but the model expects {shape[1]}"
        )
    if rows.ndim != len(shape) or any(
        want >= 0 and want != got for want, got in zip(shape[1:], rows.shape[1:], strict=True)
    ):
        expected = "[" + ", ".join("N" if n < 0 else str(n) for n in shape) + "]"
        raise PackagingError(
            f"sample_input has shape {list(rows.shape)} but the model expects {expected}"
        )


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
