"""ONNX Runtime runtime and packager: `.onnx` files and onnx.ModelProto objects.

ONNX is also the route for MXNet models (Apache MXNet is retired): export them with
`mxnet.onnx.export_model` (or convert with a current tool) and package the `.onnx` file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError, PackagingError
from .base import ModelFacts, ModelPath, PackageOptions, Packager, Runtime, numpy_dtype
from .common import copy_into, defined_in, labels, pin, shape_of

if TYPE_CHECKING:
    from ..descriptor import BundleDescriptor

_ARTIFACT = "model.onnx"
# ONNX tensor element types -> Open Inference Protocol datatypes.
_DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
}


def open_session(path: Path | bytes) -> Any:
    """An ONNX Runtime CPU session; one intra-op thread when the server runs one per core."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        options.intra_op_num_threads = int(threads)
    source = path if isinstance(path, bytes) else str(path)
    return onnxruntime.InferenceSession(
        source, sess_options=options, providers=["CPUExecutionProvider"]
    )


def default_output(outputs: list[Any]) -> str:
    """Class probabilities when the model has them (like scikit-learn), else the first output."""
    for output in outputs:
        if "probabilit" in output.name.lower():
            return str(output.name)
    return str(outputs[0].name)


class OnnxRuntime(Runtime):
    """Serves an ONNX model with ONNX Runtime on the CPU.

    The model must have one input. `predictMethod` names the output to return (default: the
    class probabilities when there is such an output, else the first one). A ZipMap output
    (a list of {class: probability}) is returned as a matrix, one column per class.
    """

    name = "onnx"

    def __init__(self) -> None:
        super().__init__()
        self.session: Any = None
        self._input = ""
        self._outputs: list[str] = []
        self._dtype: np.dtype = np.dtype(np.float32)
        self._class_names: list[str] | None = None

    def load(self, bundle_dir: Path, descriptor: BundleDescriptor) -> None:
        """Open the session and resolve the input and the served output."""
        try:
            self.session = open_session(bundle_dir / descriptor.artifact)
        except Exception as exc:
            raise ModelLoadError(
                f"onnxruntime cannot load {descriptor.artifact} ({type(exc).__name__}: {exc})"
            ) from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(
                f"the ONNX model has {len(inputs)} inputs; the onnx runtime serves models with "
                "one input (wrap others in a custom Python model)"
            )
        self._input = inputs[0].name
        dtype = _DATATYPES.get(inputs[0].type)
        if dtype is None:
            raise ModelLoadError(f"the ONNX model's input type {inputs[0].type} is not numeric")
        self._dtype = numpy_dtype(dtype)
        names = [o.name for o in self.session.get_outputs()]
        output = descriptor.predict_method or default_output(self.session.get_outputs())
        if output not in names:
            raise ModelLoadError(
                f"the ONNX model has no output {output!r} (bundle.yaml predictMethod); its "
                f"outputs are {', '.join(names)}"
            )
        self._outputs = [output]
        self._class_names = list(descriptor.class_names) if descriptor.class_names else None

    @property
    def class_names(self) -> list[str] | None:
        """classNames from the bundle."""
        return self._class_names

    def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> np.ndarray:
        """Run the session; ZipMap lists become a matrix in class order."""
        X = np.ascontiguousarray(X, dtype=self._dtype)
        (output,) = self.session.run(self._outputs, {self._input: X})
        if isinstance(output, list) and output and isinstance(output[0], dict):
            keys = list(output[0])
            if self._class_names is None:  # ZipMap knows the labels; the bundle may not
                self._class_names = labels(keys)
            return np.array([[row[k] for k in keys] for row in output])
        return np.asarray(output)


class OnnxPackager(Packager):
    """Packages ONNX models (files or onnx.ModelProto); the MXNet route goes through here."""

    framework = "onnx"
    description = "an ONNX model (.onnx file or onnx.ModelProto; MXNet models exported to ONNX)"
    file_suffixes = (".onnx",)
    detect_order = 30

    def accepts(self, model: Any) -> bool:
        """True for onnx.ModelProto objects."""
        if isinstance(model, type) or not defined_in(model, "onnx"):
            return False
        import onnx

        return isinstance(model, onnx.ModelProto)

    def inspect(self, model: Any, options: PackageOptions) -> ModelFacts:
        """Open the model once: its input shape and type, the output to serve, class labels."""
        import onnxruntime

        source = model.path if isinstance(model, ModelPath) else model.SerializeToString()
        try:
            session = open_session(source)
        except Exception as exc:
            raise PackagingError(
                f"onnxruntime cannot load the model ({type(exc).__name__}: {exc})"
            ) from None
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise PackagingError(
                f"the ONNX model has {len(inputs)} inputs "
                f"({', '.join(i.name for i in inputs)}); the onnx runtime serves models with "
                "one input"
            )
        outputs = session.get_outputs()
        names = [o.name for o in outputs]
        output = options.predict_method or default_output(outputs)
        if output not in names:
            raise PackagingError(
                f"predict_method={output!r}: the ONNX model has no such output; its outputs "
                f"are {', '.join(names)}"
            )
        dtype = _DATATYPES.get(inputs[0].type)
        if dtype is None:
            raise PackagingError(f"the ONNX model's input type {inputs[0].type} is not numeric")
        return ModelFacts(
            framework=self.framework,
            runtime=OnnxRuntime.name,
            framework_version=onnxruntime.__version__,
            predict_method=output,
            class_names=options.class_names,
            requirements=pin("onnxruntime", "numpy"),
            input_shape=shape_of(inputs[0].shape) if inputs[0].shape else None,
            input_datatype=dtype,
        )

    def save(
        self,
        model: Any,
        bundle_dir: Path,
        source_file: Path | None,
        options: PackageOptions,
        facts: ModelFacts,
    ) -> str:
        """Copy the .onnx file, or serialize the ModelProto."""
        if isinstance(model, ModelPath):
            copy_into(model.path, bundle_dir, _ARTIFACT)
        else:
            (bundle_dir / _ARTIFACT).write_bytes(model.SerializeToString())
        return _ARTIFACT
