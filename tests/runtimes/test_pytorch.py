"""PyTorch: TorchScript and state dict + class source bundles, served and compared with torch."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import numpy as np
import pytest

from primehub_jupyter.serving.bundle import load_bundle
from primehub_jupyter.serving.errors import PackagingError
from primehub_jupyter.serving.packaging import package
from primehub_jupyter.serving.registry import load_runtime

from .helpers import descriptor, iris, serve

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed (pip install 'primehub-jupyter[torch]')"
)

NET_SOURCE = textwrap.dedent(
    """
    import torch


    class IrisNet(torch.nn.Module):
        def __init__(self, hidden: int = 6) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(4, hidden)
            self.out = torch.nn.Linear(hidden, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=1)


    class Tripler(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = lambda t: t * 3  # a Python callable: scripting fails, tracing works

        def forward(self, x):
            return self.scale(x)


    class TinyConv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, kernel_size=3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean(dim=(2, 3))
    """
)


@pytest.fixture(scope="module")
def net_module(tmp_path_factory):
    """The nn.Module classes, imported from a real .py file (as a user's code would be)."""
    path = tmp_path_factory.mktemp("torch-src") / "iris_net.py"
    path.write_text(NET_SOURCE)
    spec = importlib.util.spec_from_file_location("iris_net_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield path, module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def trained(net_module):
    _, module = net_module
    X, y = iris()
    torch.manual_seed(0)
    net = module.IrisNet(hidden=6)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    inputs, targets = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(net(inputs)), targets)
        loss.backward()
        optimizer.step()
    net.eval()
    return X, net


def _expected(net, rows):
    with torch.no_grad():
        return net(torch.tensor(rows, dtype=torch.float32)).numpy()


@pytest.fixture(scope="module")
def torchscript_bundle(trained, tmp_path_factory):
    X, net = trained
    return package(net, tmp_path_factory.mktemp("torch") / "iris-torch", sample_input=X[:2])


@pytest.fixture(scope="module")
def state_dict_bundle(trained, net_module, tmp_path_factory):
    X, net = trained
    source, _ = net_module
    return package(
        net.state_dict(),
        tmp_path_factory.mktemp("torch-sd") / "iris-state",
        source=source,
        model_class="IrisNet",
        init_kwargs={"hidden": 6},
        sample_input=X[:2],
    )


@pytest.fixture(scope="module")
def torchscript_server(torchscript_bundle, tmp_path_factory):
    yield from serve(torchscript_bundle, tmp_path_factory.mktemp("torch-server"))


@pytest.fixture(scope="module")
def state_dict_server(state_dict_bundle, tmp_path_factory):
    yield from serve(state_dict_bundle, tmp_path_factory.mktemp("torch-sd-server"))


def test_torchscript_over_http_equals_torch(trained, torchscript_server):
    X, net = trained
    rows = X[::11]
    assert np.allclose(torchscript_server.predict(rows), _expected(net, rows), atol=1e-6)


def test_state_dict_over_http_equals_torch(trained, state_dict_server):
    X, net = trained
    rows = X[1::13]
    assert np.allclose(state_dict_server.predict(rows), _expected(net, rows), atol=1e-6)


def test_descriptors(torchscript_bundle, state_dict_bundle):
    script = descriptor(torchscript_bundle)
    assert (script["framework"], script["runtime"]) == ("pytorch", "pytorch")
    assert script["parameters"] == {"format": "torchscript"}
    assert script["signature"]["inputs"][0] == {
        "name": "input-0",
        "datatype": "FP32",
        "shape": [-1, 4],
    }
    assert torch.jit.load(str(torchscript_bundle / script["artifact"])) is not None
    state = descriptor(state_dict_bundle)
    assert state["parameters"] == {"format": "state_dict", "initKwargs": {"hidden": 6}}
    assert (state["source"], state["modelClass"]) == ("iris_net.py", "IrisNet")
    assert (state_dict_bundle / "iris_net.py").read_text() == NET_SOURCE
    pins = (state_dict_bundle / "requirements.txt").read_text()
    version = torch.__version__.split("+")[0]
    assert f"torch=={version}\n" in pins  # no local label: the pin fits CPU and CUDA indexes


def test_module_with_source_goes_the_state_dict_route(trained, net_module, tmp_path):
    X, net = trained
    source, _ = net_module
    bundle = package(
        net, tmp_path / "via-module", source=source, init_kwargs={"hidden": 6}, sample_input=X[:1]
    )
    assert descriptor(bundle)["modelClass"] == "IrisNet"
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert np.allclose(runtime.predict(X[:3], None, {}), _expected(net, X[:3]), atol=1e-6)


def test_saved_files_torchscript_and_state_dict(trained, net_module, tmp_path):
    X, net = trained
    source, _ = net_module
    scripted = tmp_path / "net.pt"
    torch.jit.script(net).save(str(scripted))
    bundle = package(str(scripted), tmp_path / "from-script", sample_input=X[:1])
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert np.allclose(runtime.predict(X[:2], None, {}), _expected(net, X[:2]), atol=1e-6)
    weights = tmp_path / "weights.pth"
    torch.save(net.state_dict(), weights)
    with pytest.raises(PackagingError, match=r"needs the \.py file that defines its nn\.Module"):
        package(weights, tmp_path / "no-source", sample_input=X[:1])
    with pytest.raises(PackagingError, match=r"IrisNet\(\*\*\{\}\) failed|does not fit IrisNet"):
        package(
            weights,
            tmp_path / "wrong-size",
            source=source,
            model_class="IrisNet",
            init_kwargs={"hidden": 5},
            sample_input=X[:1],
        )
    whole = tmp_path / "whole.pt"
    torch.save(net, whole)
    with pytest.raises(PackagingError, match="neither TorchScript nor a state dict"):
        package(whole, tmp_path / "pickled")


def test_image_shaped_input_and_its_signature(net_module, tmp_path):
    _, module = net_module
    torch.manual_seed(1)
    conv = module.TinyConv().eval()
    images = np.random.default_rng(0).random((3, 1, 5, 5))
    bundle = package(conv, tmp_path / "conv", sample_input=images[:1])
    data = descriptor(bundle)
    assert data["signature"]["inputs"][0]["shape"] == [-1, 1, 5, 5]
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert np.allclose(runtime.predict(images, None, {}), _expected(conv, images), atol=1e-6)
    with pytest.raises(PackagingError, match=r"cannot tell the shape of the model's input"):
        package(conv, tmp_path / "no-sample")


def test_a_module_that_cannot_be_scripted_is_traced_on_the_sample(net_module, tmp_path):
    _, module = net_module
    X, _ = iris()
    with pytest.raises(PackagingError, match="pass sample_input= so it can be traced"):
        package(module.Tripler(), tmp_path / "untraced")
    bundle = package(module.Tripler(), tmp_path / "traced", sample_input=X[:2])
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert np.allclose(runtime.predict(X[5:8], None, {}), X[5:8] * 3, atol=1e-5)
