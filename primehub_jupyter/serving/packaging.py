"""`package()`: write a model bundle for a model object or a saved model, with the packagers."""

from __future__ import annotations

import base64
import os
import re
import shutil
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .bundle import DESCRIPTOR_FILE, REQUIREMENTS_FILE, load_bundle
from .container import write_build_context
from .descriptor import TABLE, BundleDescriptor, Sample, Signature, TensorSpec
from .errors import BundleError, ModelLoadError, PackagingError
from .protocols import seldon
from .registry import find_packager, load_runtime, packager_for, packagers, supported_models
from .runtimes.base import ModelFacts, PackageOptions, Packager, datatype_of
from .runtimes.common import bundle_name, merge_requirements
from .tables import Table, column_kind, column_specs, request_rows, sample_frame

#: At most this many rows of `sample_input` are kept in bundle.yaml (it is an example, not data).
SAMPLE_ROWS = 3


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
    """The model's path; a URI that a packager owns (MLflow's runs:/) is downloaded first."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if isinstance(text, str) and not path.exists():
        for packager in packagers():
            local = packager.resolve_uri(text, scratch)
            if local is not None:
                return local
    return path.absolute()


def _directory_kinds(candidates: list[Packager]) -> list[tuple[str, str]]:
    return [p.directory_kind for p in candidates if p.directory_kind is not None]


def _unsupported(model: Any) -> PackagingError:
    directories = " or ".join(kind for kind, _ in _directory_kinds(packagers()))
    saved = ", ".join(sorted({s for p in packagers() for s in p.file_suffixes})) + " file"
    if directories:
        saved += f", or {directories} directory"
    hint = ""
    if callable(getattr(model, "predict", None)) and not isinstance(model, type):
        hint = (
            "; for your own Python class pass the class itself (package(MyModel, path)) or "
            "framework='custom'"
        )
    return PackagingError(
        f"cannot package a {type(model).__module__}.{type(model).__qualname__}: supported "
        f"are {supported_models()}, or the path of a saved model ({saved}){hint}"
    )


def _choose_packager(model: Any, framework: str | None) -> Packager:
    if framework is None:
        packager = find_packager(model)
        if packager is None:
            raise _unsupported(model)
        return packager
    packager = packager_for(framework)
    if not packager.accepts_named(model):
        raise PackagingError(
            f"framework={framework!r}, but the model is a {type(model).__module__}."
            f"{type(model).__qualname__}; that framework takes {packager.description}"
        )
    return packager


def _read_model_path(
    source: Path, framework: str | None, options: PackageOptions
) -> tuple[Packager, Any, bool]:
    """(packager, model, whether to copy the file as the artifact) for a saved model."""
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
        kinds = [f"{kind} (no {marker})" for kind, marker in _directory_kinds(candidates)]
        return PackagingError(
            f"cannot package the directory {source}: it is "
            + (f"neither {' nor '.join(kinds)}" if len(kinds) > 1 else f"not {''.join(kinds)}")
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
        signature=Signature(
            content_type=TABLE if sample.table is not None else None,
            inputs=sample.input_specs(facts),
        ),
        created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    try:
        runtime = load_runtime(bundle_dir, descriptor)
    except (BundleError, ModelLoadError) as exc:
        raise PackagingError(f"the packaged model does not load: {exc}") from exc
    try:
        response = runtime.predict_raw(sample.request)
        if response is None:
            X = sample.X
            if sample.table is not None:  # the way the server will read it
                X = sample.table.from_rows(sample.names, sample.request["data"]["ndarray"], "")
            else:
                X = runtime.check_input(X, sample.names)
            output = runtime.predict(X, sample.names, {})
    except Exception as exc:
        raise PackagingError(
            f"the model failed on the sample input ({type(exc).__name__}: {exc}); "
            "pass a few rows it takes as sample_input= (for a model fitted on a DataFrame, "
            "e.g. df.head(2))"
        ) from exc
    if descriptor.class_names is None and runtime.class_names:
        descriptor.class_names = list(runtime.class_names)
    if response is None:
        if isinstance(output, (str, bytes, dict)):
            response = seldon.response_dict(output, seldon.NDARRAY, None, {})
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
    return dict(orjson.loads(encoded))


class _Sample:
    """The sample input as the server will see it: the request document and the decoded X."""

    def __init__(
        self, request: dict[str, Any], X: Any, names: list[str] | None, table: Table | None = None
    ) -> None:
        self.request = request
        self.X = X
        self.names = names
        #: The columns, for a model that takes a table (mixed types): the signature's inputs.
        self.table = table

    @classmethod
    def make(cls, sample_input: Any, facts: ModelFacts) -> _Sample:
        shape = facts.sample_shape()
        names = facts.feature_names
        if sample_input is None:
            sample_input = facts.default_sample
        frame = _table_frame(sample_input, facts)
        if frame is not None:
            table = Table(column_specs(frame, facts.categories))
            frame = frame.head(SAMPLE_ROWS)
            return cls({"data": request_rows(frame)}, frame, table.columns, table)
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
        if isinstance(value, str):
            return cls({"strData": value}, value, None)
        if isinstance(value, bytes):
            return cls({"binData": base64.b64encode(value).decode("ascii")}, value, None)
        return cls({"jsonData": value}, value, None)

    def input_specs(self, facts: ModelFacts) -> list[TensorSpec]:
        """The signature's input: numeric arrays by shape and dtype; strings as BYTES; one
        input per column for a table."""
        if self.table is not None:
            return list(self.table.specs)
        if isinstance(self.X, np.ndarray) and self.X.dtype.kind == "f":
            shape = facts.sample_shape() or [-1, *self.X.shape[1:]]
            return [TensorSpec(name="input-0", datatype=facts.input_datatype, shape=shape)]
        if isinstance(self.X, (str, bytes)) or (
            isinstance(self.X, np.ndarray) and self.X.dtype.kind in "US"
        ):
            return [TensorSpec(name="input-0", datatype="BYTES", shape=[-1])]
        return []


def _table_frame(sample_input: Any, facts: ModelFacts) -> Any:
    """The sample as a DataFrame in the model's column order when the model takes a table
    (columns of mixed types: text, categories, booleans, datetimes), else None."""
    names = facts.feature_names
    if sample_input is None:
        if not names or not _wants_table(facts):
            return None
        specs = [
            TensorSpec(
                name=name,
                datatype="BYTES",
                shape=[-1],
                dtype=facts.column_dtypes.get(name) or _category_dtype(facts.categories.get(name)),
                categories=facts.categories.get(name),
            )
            for name in names
        ]
        return sample_frame(specs)
    import pandas as pd

    if (
        isinstance(sample_input, list)
        and sample_input
        and all(isinstance(r, dict) for r in sample_input)
    ):
        sample_input = pd.DataFrame(sample_input)
    elif isinstance(sample_input, dict) and names and set(sample_input) == set(names):
        sample_input = pd.DataFrame(sample_input if _all_lists(sample_input) else [sample_input])
    elif names and not isinstance(sample_input, (pd.DataFrame, str, bytes, dict)):
        try:  # rows of mixed values for a model fitted on named columns
            rows = np.asarray(sample_input, dtype=object)
        except ValueError:
            return None
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        if rows.ndim != 2 or rows.shape[1] != len(names):
            return None
        sample_input = _typed(pd.DataFrame(rows.tolist(), columns=names).infer_objects())
    if not isinstance(sample_input, pd.DataFrame):
        return None
    frame = sample_input
    if names:
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise PackagingError(
                f"sample_input has no column {missing[0]!r}; the model was fitted on "
                f"{', '.join(names)}"
            )
        frame = frame[names]
    if frame.shape[0] == 0:
        raise PackagingError("sample_input must hold one or more rows")
    numeric = all(dtype.kind in "iuf" for dtype in frame.dtypes)
    if numeric and not _wants_table(facts):
        return None  # a numeric table is served as rows of numbers, with its column names
    return frame


_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d+)?)?)?")


def _typed(frame: Any) -> Any:
    """Rows carry no column types: text columns whose every value is an ISO 8601 date-time
    become datetime columns (that is how date-times travel in requests)."""
    import pandas as pd

    for name in frame.columns:
        values = frame[name].dropna().tolist()
        if values and all(isinstance(v, str) and _ISO_DATE.fullmatch(v) for v in values):
            frame[name] = pd.to_datetime(frame[name], format="ISO8601")
    return frame


def _wants_table(facts: ModelFacts) -> bool:
    """Whether what the packager knows about the columns needs more than rows of numbers."""
    dtypes = [
        facts.column_dtypes.get(n) or _category_dtype(facts.categories.get(n))
        for n in facts.feature_names or []
    ]
    return any(column_kind(d) not in ("int", "float") for d in dtypes)


def _category_dtype(categories: list[Any] | None) -> str:
    # Columns no encoder reads are numbers to every scikit-learn step that sees them.
    if not categories or all(
        isinstance(c, (int, float)) and not isinstance(c, bool) for c in categories
    ):
        return "float64"
    return "object"


def _all_lists(value: dict[str, Any]) -> bool:
    return all(isinstance(v, list) for v in value.values())


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
