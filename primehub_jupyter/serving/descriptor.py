"""The bundle.yaml document: `BundleDescriptor` and the signature and sample it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from pydantic.alias_generators import to_camel

FORMAT_VERSION = 1


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


#: Signature.content_type of a column table (MLServer's name for a pandas DataFrame).
TABLE = "pd"


class TensorSpec(_CamelModel):
    """One named input or output of the model: datatype and shape (-1 = any size).

    In a table signature each input is one column (shape [-1]) and also records the pandas
    dtype the model was fitted with (`dtype`: int64, float64, object, category, bool,
    datetime64[ns], ...) and, for categorical columns, the categories the model knows.
    """

    name: str
    datatype: str
    shape: list[int]
    #: The column's pandas dtype name (table signatures only).
    dtype: str | None = None
    #: The values a categorical or string column's encoder knows, when the model says.
    categories: list[Any] | None = None

    def v2_metadata(self) -> dict[str, Any]:
        """The tensor as KServe V2 model metadata lists it: name, datatype and shape."""
        return self.model_dump(include={"name", "datatype", "shape"})


class Signature(_CamelModel):
    """The model's inputs and outputs; `content_type` "pd" marks the inputs as table columns."""

    #: None for tensors (the default, and every bundle older than tables); "pd" for a table.
    content_type: str | None = None
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)

    @property
    def is_table(self) -> bool:
        """True when the inputs are the columns of a DataFrame."""
        return self.content_type == TABLE


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
