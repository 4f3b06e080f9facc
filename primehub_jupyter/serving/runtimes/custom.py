"""Custom Python models in the style of Seldon's Python wrapper: a class with load/predict.

A model class written for Seldon's wrapper moves over unchanged: `__init__(**parameters)`,
`load()`, `predict(X, features_names[, meta])`, and the optional `class_names` (attribute or
method), `tags()`, `metrics()`, `health_status()`, `predict_raw(request)`,
`send_feedback(features, feature_names, reward, truth, routing=None)`,
`send_feedback_raw(feedback)` and `init_metadata()`.
"""

from __future__ import annotations

import ast
import base64
import inspect
import json
import linecache
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from ..errors import ModelLoadError, PackagingError, PayloadError
from .base import ModelFacts, ModelPath, PackageOptions, Packager, Runtime
from .common import (
    bundle_name,
    copy_into,
    defined_in,
    import_source,
    imported_modules,
    merge_requirements,
    pin,
    working_directory,
)

if TYPE_CHECKING:
    from ..descriptor import BundleDescriptor

SELDON_PAYLOADS = frozenset({"ndarray", "tensor", "strData", "jsonData", "binData"})
METRIC_TYPES = frozenset({"COUNTER", "GAUGE", "TIMER"})
# Packages whose classes are models to pass fitted, not classes to wrap.
_FRAMEWORKS = ("sklearn", "xgboost", "lightgbm", "torch", "keras", "tensorflow", "onnx", "mlflow")


def _not_implemented(exc: BaseException) -> bool:
    # seldon_core's SeldonComponent (or our stand-in) raises this from every default method.
    return type(exc).__name__ == "SeldonNotImplementedError"


class CustomRuntime(Runtime):
    """Serves an instance of the bundle's `modelClass` from its `source` file.

    The instance is created and `load()`ed with the bundle directory as working directory, so
    files named by relative path (as with Seldon's wrapper) are found. Constructor arguments
    come from `parameters.initKwargs`, overridden by Seldon's PREDICTIVE_UNIT_PARAMETERS.
    """

    name = "custom"
    payload_kinds = SELDON_PAYLOADS
    numeric_input = False
    # A user's predict may keep state between calls or answer strings: never stack requests.
    supports_batching = False

    def __init__(self) -> None:
        super().__init__()
        self.user: Any = None
        self._with_meta = False
        self._metadata: dict[str, Any] | None = None
        self._missing: set[str] = set()
        self._last_tags: dict[str, Any] = {}
        self._last_metrics: list[dict[str, Any]] = []

    def load(self, bundle_dir: Path, descriptor: BundleDescriptor) -> None:
        """Import the source, instantiate the class and call its `load()`."""
        from . import seldon_compat

        class_name = descriptor.model_class
        if not class_name:
            raise ModelLoadError("bundle.yaml must name the model's class in modelClass")
        source = bundle_dir / descriptor.artifact
        kwargs = dict(self.parameters.get("initKwargs") or {})
        kwargs.update(seldon_parameters(os.environ.get("PREDICTIVE_UNIT_PARAMETERS")))
        with working_directory(bundle_dir):
            if "seldon_core" in source.read_text(encoding="utf-8", errors="replace"):
                seldon_compat.install()
            module = import_source(source)
            cls = getattr(module, class_name, None)
            if not inspect.isclass(cls):
                raise ModelLoadError(
                    f"{descriptor.artifact} defines no class {class_name!r} (bundle.yaml "
                    "modelClass)"
                )
            try:
                self.user = cls(**kwargs)
            except TypeError as exc:
                raise ModelLoadError(
                    f"{class_name}(**{kwargs!r}) failed: {exc}; pass its arguments with "
                    "package(..., init_kwargs={...}) or PREDICTIVE_UNIT_PARAMETERS"
                ) from exc
            except FileNotFoundError as exc:
                raise _missing_file(class_name, "__init__", exc) from exc
            if callable(getattr(self.user, "load", None)):
                try:
                    self.user.load()
                except FileNotFoundError as exc:
                    raise _missing_file(class_name, "load()", exc) from exc
            self._metadata = self._optional("init_metadata")
        predict = getattr(self.user, "predict", None)
        if not callable(predict):
            raise ModelLoadError(f"{class_name} has no predict(X, features_names) method")
        self._with_meta = _takes_meta(predict)

    def _optional(self, hook: str, *args: Any, **kwargs: Any) -> Any:
        """Call the user's `hook` if it has one that is implemented; None otherwise."""
        if hook in self._missing:
            return None
        method = getattr(self.user, hook, None)
        if not callable(method):
            self._missing.add(hook)
            return None
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if _not_implemented(exc):
                self._missing.add(hook)
                return None
            raise

    def check_input(self, X: Any, names: list[str] | None = None) -> Any:
        """Numeric arrays are checked against the signature; strings, JSON and bytes are not."""
        if isinstance(X, np.ndarray) and X.dtype.kind in "biuf":
            return super().check_input(X, names)
        return X

    def predict(self, X: Any, names: list[str] | None, meta: dict[str, Any]) -> Any:
        """Call the user's predict; a ClientResponse's tags and metrics are kept for this call."""
        try:
            if self._with_meta:
                output = self.user.predict(X, names, meta=meta)
            else:
                output = self.user.predict(X, names)
        except Exception as exc:
            _reraise(exc)
        self._last_tags, self._last_metrics = {}, []
        if type(output).__name__ == "ClientResponse" and hasattr(output, "data"):
            self._last_tags = dict(getattr(output, "tags", None) or {})
            self._last_metrics = list(getattr(output, "metrics", None) or [])
            output = output.data
        return as_output(output)

    @property
    def class_names(self) -> list[str] | None:
        """The model's class_names (a list attribute or a method), else None."""
        value = getattr(self.user, "class_names", None)
        if callable(value):
            value = self._optional("class_names")
        return [str(v) for v in value] if value is not None else None

    def tags(self) -> dict[str, Any]:
        """The model's tags() plus the tags of the last ClientResponse."""
        tags = dict(self._optional("tags") or {})
        tags.update(self._last_tags)
        return tags

    def metrics(self) -> list[dict[str, Any]]:
        """The model's metrics() plus the last ClientResponse's, checked like Seldon does."""
        metrics = list(self._optional("metrics") or []) + self._last_metrics
        for metric in metrics:
            check_metric(metric)
        return metrics

    def health_status(self) -> Any:
        """The model's health_status() (JSON-safe), which raises when it is unhealthy."""
        value = self._optional("health_status")
        return value.tolist() if isinstance(value, np.ndarray) else value

    def metadata(self) -> dict[str, Any] | None:
        """What the model's init_metadata() returned at load."""
        return self._metadata

    def predict_raw(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The model's predict_raw(request) when it has one, else None (use predict)."""
        try:
            result = self._optional("predict_raw", request)
        except Exception as exc:
            _reraise(exc)
        return None if result is None else _as_message(result)

    def send_feedback(
        self, request: dict[str, Any], response: dict[str, Any], reward: float, truth: Any
    ) -> dict[str, Any] | None:
        """send_feedback_raw(feedback) if the model has it, else send_feedback(features, ...)."""
        feedback = {"request": request, "response": response, "reward": reward, "truth": truth}
        if "send_feedback_raw" not in self._missing:
            result = self._optional("send_feedback_raw", feedback)
            if "send_feedback_raw" not in self._missing:
                return None if result is None else _as_message(result)
        features, names = message_data(request or {})
        truth_value = message_data(truth)[0] if isinstance(truth, dict) else truth
        method = getattr(self.user, "send_feedback", None)
        if not callable(method):
            return None
        routing = (response or {}).get("meta", {}).get("routing") if response else None
        try:
            if "routing" in _parameter_names(method):
                result = self._optional(
                    "send_feedback", features, names, reward, truth_value, routing=routing
                )
            else:
                result = self._optional("send_feedback", features, names, reward, truth_value)
        except Exception as exc:
            _reraise(exc)
        return None if result is None else _as_message(result)


def _missing_file(class_name: str, where: str, exc: FileNotFoundError) -> ModelLoadError:
    name = exc.filename or str(exc)
    return ModelLoadError(
        f"{class_name}.{where} cannot open {name} ({exc.strerror or exc}): files the model "
        "reads must be in the bundle; package them with files=[...] (paths relative to the "
        "bundle, as the model opens them)"
    )


def _parameter_names(method: Any) -> set[str]:
    try:
        return set(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return set()


def _takes_meta(predict: Any) -> bool:
    """Seldon passes meta as a keyword; models written as predict(X, names) get two args."""
    try:
        parameters = inspect.signature(predict).parameters.values()
    except (TypeError, ValueError):
        return False
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD or parameter.name == "meta":
            return True
    return False


def _reraise(exc: Exception) -> NoReturn:
    """Re-raise the model's error; Seldon's 4xx exceptions become PayloadErrors (client errors)."""
    status = getattr(exc, "status_code", None)
    if type(exc).__name__ in ("SeldonMicroserviceException", "SeldonNotImplementedError") and (
        isinstance(status, int) and 400 <= status < 500
    ):
        error = PayloadError(str(getattr(exc, "message", None) or exc))
        error.status = status
        error.reason = str(getattr(exc, "reason", None) or PayloadError.reason)
        raise error from exc
    raise exc


def as_output(value: Any) -> Any:
    """Arrays for lists and frames; str, bytes and dict (JSON) pass through as they are."""
    if value is None or isinstance(value, (str, bytes, dict, np.ndarray)):
        return value
    if isinstance(value, (list, tuple)) or hasattr(value, "__array__"):
        return np.asarray(value)
    if isinstance(value, (int, float, bool, np.generic)):
        return np.asarray([value])
    return value


def message_data(message: dict[str, Any]) -> tuple[Any, list[str] | None]:
    """The payload of a Seldon message (array, str, JSON or bytes) and its names."""
    if not isinstance(message, dict):
        return message, None
    if "strData" in message:
        return message["strData"], None
    if "jsonData" in message:
        return message["jsonData"], None
    if "binData" in message:
        try:
            return base64.b64decode(message["binData"]), None
        except (ValueError, TypeError) as exc:
            raise PayloadError(f'"binData" is not base64: {exc}') from None
    data = message.get("data") or {}
    names = data.get("names") or None
    if "tensor" in data:
        tensor = data["tensor"]
        return np.asarray(tensor.get("values", [])).reshape(tensor.get("shape", [-1])), names
    if "ndarray" in data:
        return np.asarray(data["ndarray"]), names
    return None, names


def message_of(output: Any, class_names: list[str] | None = None) -> dict[str, Any]:
    """A Seldon response message for a model output (ndarray, strData, jsonData or binData)."""
    if isinstance(output, str):
        return {"strData": output}
    if isinstance(output, bytes):
        return {"binData": base64.b64encode(output).decode("ascii")}
    if isinstance(output, dict):
        return {"jsonData": output}
    array = np.asarray(output)
    names: list[str] = []
    if array.ndim >= 2:
        columns = array.shape[1]
        names = (
            class_names
            if class_names and len(class_names) == columns
            else [f"t:{i}" for i in range(columns)]
        )
    return {"data": {"names": names, "ndarray": array.tolist()}}


def _as_message(result: Any) -> dict[str, Any]:
    if type(result).__name__ == "ClientResponse" and hasattr(result, "data"):
        result = result.data
    if isinstance(result, dict) and (
        "data" in result or {"strData", "jsonData", "binData", "meta"} & set(result)
    ):
        return result
    return message_of(as_output(result))


def check_metric(metric: Any) -> None:
    """Refuse a malformed custom metric, as Seldon's wrapper does (an error, not a silent drop)."""
    if (
        not isinstance(metric, dict)
        or metric.get("type") not in METRIC_TYPES
        or not isinstance(metric.get("key"), str)
        or not isinstance(metric.get("value"), (int, float))
        or isinstance(metric.get("value"), bool)
        or not isinstance(metric.get("tags", {}), dict)
    ):
        raise ValueError(
            f"bad custom metric {metric!r}: each metric is {{'type': COUNTER|GAUGE|TIMER, "
            "'key': str, 'value': number, 'tags'?: {str: str}}"
        )


def seldon_parameters(raw: str | None) -> dict[str, Any]:
    """Seldon's PREDICTIVE_UNIT_PARAMETERS ([{name, value, type}]) as constructor kwargs."""
    if not raw:
        return {}
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise ModelLoadError(f"PREDICTIVE_UNIT_PARAMETERS is not JSON: {exc}") from None
    result: dict[str, Any] = {}
    for item in items if isinstance(items, list) else []:
        name, value, kind = item.get("name"), item.get("value"), str(item.get("type", "STRING"))
        if not name:
            continue
        try:
            if kind == "INT":
                result[name] = int(value)
            elif kind in ("FLOAT", "DOUBLE"):
                result[name] = float(value)
            elif kind == "BOOL":
                result[name] = str(value).lower() == "true"
            elif kind == "JSON":
                result[name] = json.loads(value) if isinstance(value, str) else value
            else:
                result[name] = value
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(
                f"PREDICTIVE_UNIT_PARAMETERS: {name}={value!r} is not a valid {kind}: {exc}"
            ) from None
    return result


class CustomPackager(Packager):
    """Packages a Python class with load()/predict() (Seldon style) and the files it reads."""

    framework = "custom"
    description = (
        "your own Python class with predict(X, features_names[, meta]) (Seldon style: pass the "
        "class, or a .py file with model_class=)"
    )
    file_suffixes = (".py",)
    detect_order = 80  # a catch-all for classes with predict(): after every framework

    def accepts(self, model: Any) -> bool:
        """A class (not an instance) with a predict method, from outside the ML frameworks."""
        return (
            inspect.isclass(model)
            and callable(getattr(model, "predict", None))
            and not defined_in(model, *_FRAMEWORKS)
        )

    def accepts_named(self, model: Any) -> bool:
        """With framework="custom", an instance with predict() too: its class is packaged."""
        return self.accepts(model) or callable(getattr(model, "predict", None))

    def load_file(self, path: Path, options: PackageOptions) -> Any:
        """A .py file is used as it is."""
        return ModelPath(path)

    def inspect(self, model: Any, options: PackageOptions) -> ModelFacts:
        """Find the class and its source; pin what the source imports."""
        if isinstance(model, ModelPath):
            text = model.path.read_text(encoding="utf-8")
            class_name = options.model_class or _pick_class(text, model.path)
            file_name = model.path.name
        else:
            cls = model if inspect.isclass(model) else type(model)
            if options.model_class and options.model_class != cls.__name__:
                raise PackagingError(
                    f"model_class={options.model_class!r} but the class is {cls.__name__}"
                )
            class_name = cls.__name__
            file_name, text = class_source(cls)
        if class_name not in _class_names(text):
            raise PackagingError(f"{file_name} defines no class {class_name!r}")
        parameters: dict[str, Any] = {}
        if options.init_kwargs:
            parameters["initKwargs"] = dict(options.init_kwargs)
        requirements = merge_requirements(pin("numpy"), pin(*imported_modules(text)))
        return ModelFacts(
            framework=self.framework,
            runtime=CustomRuntime.name,
            framework_version=platform.python_version(),
            class_names=options.class_names,
            requirements=requirements,
            parameters=parameters,
            source=file_name,
            source_text=text,
            model_class=class_name,
            any_input=True,
        )

    def save(
        self,
        model: Any,
        bundle_dir: Path,
        source_file: Path | None,
        options: PackageOptions,
        facts: ModelFacts,
    ) -> str:
        """Write the class source; copy the files it names (kept at their relative paths)."""
        assert facts.source is not None and facts.source_text is not None
        (bundle_dir / facts.source).write_text(facts.source_text, encoding="utf-8")
        for path in options.files:
            copy_into(path, bundle_dir, bundle_name(path))
        return facts.source


def _class_names(text: str) -> list[str]:
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise PackagingError(f"the model source does not parse: {exc}") from None
    return [node.name for node in tree.body if isinstance(node, ast.ClassDef)]


def _pick_class(text: str, path: Path) -> str:
    """Seldon's convention (class named like the file), else the only class with predict."""
    tree = ast.parse(text)
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    if any(node.name == path.stem for node in classes):
        return path.stem
    with_predict = [
        node.name
        for node in classes
        if any(isinstance(f, ast.FunctionDef) and f.name == "predict" for f in node.body)
    ]
    if len(with_predict) == 1:
        return with_predict[0]
    raise PackagingError(
        f"cannot tell which class in {path.name} is the model "
        f"({', '.join(n.name for n in classes) or 'it defines none'}): pass model_class="
    )


def class_source(cls: type) -> tuple[str, str]:
    """(file name, source) for a class: its module file, or for a class defined in a notebook
    or script (`__main__`) the imports and the class itself, as `<ClassName>.py`."""
    if cls.__module__ != "__main__":
        try:
            path = inspect.getsourcefile(cls)
        except TypeError:
            path = None
        if path and Path(path).is_file():
            return Path(path).name, Path(path).read_text(encoding="utf-8")
        raise PackagingError(f"cannot find the source file of {cls.__qualname__}")
    filenames = {
        member.__code__.co_filename for member in vars(cls).values() if inspect.isfunction(member)
    }
    text = "".join(linecache.getlines(next(iter(filenames)))) if len(filenames) == 1 else ""
    if not text:
        raise PackagingError(
            f"cannot find the source of {cls.__name__} (defined interactively): write it to a "
            f".py file (e.g. %%writefile {cls.__name__}.py) and package('{cls.__name__}.py', "
            f"path, model_class='{cls.__name__}')"
        )
    return f"{cls.__name__}.py", _class_with_imports(text, cls.__name__)


def _class_with_imports(text: str, class_name: str) -> str:
    """The top-level imports of `text` followed by the definition of `class_name`."""
    tree = ast.parse(text)
    parts = [
        ast.get_source_segment(text, node) or ""
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines = text.splitlines()[start - 1 : node.end_lineno]
            parts.append("\n".join(lines))
            break
    else:
        raise PackagingError(f"cannot find the definition of class {class_name} in its cell")
    return "\n".join(parts) + "\n"
