"""Keras' own ImageNet weight files (``include_top=False``) for cnnlab's twins of ``keras.applications`` models.

The files are the legacy-HDF5 ``.h5`` files ``keras.applications`` downloads and caches in
``~/.keras/models/`` (``$KERAS_HOME/models/``): a ``layer_names`` attribute and one group per Keras layer
whose ``weight_names`` attribute lists its arrays in order. :func:`load_keras_weights` reads them by Keras
layer name into a twin, through the twin's Keras layer list (:mod:`cnnlab.models.keras_layers`): conv
kernels HWIO -> OIHW, depthwise kernels (H, W, C, 1) -> (C, 1, H, W), BatchNorm gamma, beta and moving
statistics. Getting a file needs a network: ``python -m cnnlab.models.keras_weights APPLICATION [IMG_SIZE]``
fetches it through Keras (``pip install 'cnnlab[keras]'``), or the user downloads the URL by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cnnlab.errors import CnnlabError
from cnnlab.models.keras_layers import keras_layers, keras_twin

BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
MOBILENETV2_SIZES = (96, 128, 160, 192, 224)  # Keras has a MobileNetV2 checkpoint for each; 224 for any other size


@dataclass(frozen=True)
class KerasWeights:
    """Where ``keras.applications`` gets an application's no-top ImageNet weights: file name, URL, and the
    md5 hash Keras checks (None where Keras checks none)."""

    file_name: str
    url: str
    file_hash: str | None


def _mobilenetv2(img_size: int) -> KerasWeights:
    rows = img_size if img_size in MOBILENETV2_SIZES else 224
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
    return KerasWeights(name, f"{BASE_URL}mobilenet_v2/{name}", None)


# keras.applications' file names, URLs and hashes (keras 3.15 resnet.py, mobilenet_v2.py, efficientnet_v2.py)
KERAS_WEIGHTS = {
    "ResNet50": lambda img_size: KerasWeights(
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        f"{BASE_URL}resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
    ),
    "MobileNetV2": _mobilenetv2,  # alpha 1.0; one checkpoint per input size, as Keras chooses it
    "EfficientNetV2B0": lambda img_size: KerasWeights(
        "efficientnetv2-b0_notop.h5",
        f"{BASE_URL}efficientnet_v2/efficientnetv2-b0_notop.h5",
        "893217f2bb855e2983157299931e43ff",
    ),
}


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded weights: ``$KERAS_HOME/models``, else ``~/.keras/models``."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def keras_weights_file(application: str, weights_file: str | None, img_size: int) -> Path:
    """The weight file of ``application`` to load: ``weights_file`` or Keras' cached copy; a one-line
    :class:`CnnlabError` saying how to get it when it does not exist."""
    weights = KERAS_WEIGHTS[application](img_size)
    path = Path(weights_file).expanduser() if weights_file else keras_cache_dir() / weights.file_name
    if not path.is_file():
        raise CnnlabError(
            f"Keras ImageNet weights for {application} not found at {path}: download {weights.url} there "
            f"(or anywhere, and add model.net.weights_file=/path/to/{weights.file_name}), or on a connected "
            f"machine run: pip install 'cnnlab[keras]' && "
            f"python -m cnnlab.models.keras_weights {application} {img_size}"
        )
    return path


def check_keras_weights(net: dict[str, Any], img_size: int) -> None:
    """Fail early, in one line, when a model config's ``net`` asks for Keras weights whose file is missing."""
    if net.get("weights") == "keras" and net.get("application") in KERAS_WEIGHTS:
        keras_weights_file(net["application"], net.get("weights_file"), img_size)


def fetch_keras_weights(application: str, img_size: int) -> Path:
    """Download ``application``'s weight file into Keras' cache through Keras (``keras.utils.get_file``,
    which checks the hash), as ``keras.applications`` itself does."""
    try:
        from keras.utils import get_file
    except ImportError:
        raise CnnlabError("fetching Keras weights needs Keras: pip install 'cnnlab[keras]'") from None
    weights = KERAS_WEIGHTS[application](img_size)
    return Path(get_file(weights.file_name, weights.url, cache_subdir="models", file_hash=weights.file_hash))


def _names(group: h5py.Group, name: str) -> list[str]:
    """A string-list attribute of a legacy Keras HDF5 group; Keras splits long ones into ``name0``, ``name1``..."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values += list(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [value.decode("utf8") if isinstance(value, bytes) else str(value) for value in values]


def read_keras_h5(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> its arrays in Keras' order, for the layers with weights in a legacy ``.h5`` file
    (a weights file, or a whole-model file whose weights sit under ``model_weights``)."""
    with h5py.File(path, "r") as file:
        root = file["model_weights"] if "model_weights" in file else file
        layers = {}
        for layer in _names(root, "layer_names"):
            names = _names(root[layer], "weight_names")
            if names:
                layers[layer] = [np.asarray(root[layer][name]) for name in names]
    return layers


def _torch_kernel(kernel: np.ndarray, conv: nn.Conv2d) -> torch.Tensor:
    if conv.groups == 1:  # Conv2D (H, W, in, out)
        return torch.from_numpy(kernel).permute(3, 2, 0, 1)
    # DepthwiseConv2D (H, W, in, multiplier) -> (in * multiplier, 1, H, W)
    height, width, chans, multiplier = kernel.shape
    return torch.from_numpy(kernel).permute(2, 3, 0, 1).reshape(chans * multiplier, 1, height, width)


def _targets(module: nn.Module) -> list[torch.Tensor]:
    """The tensors a Keras layer's arrays go to, in Keras' order."""
    if isinstance(module, nn.Conv2d):
        return [module.weight] + ([module.bias] if module.bias is not None else [])
    if isinstance(module, _BatchNorm):
        return [module.weight, module.bias, module.running_mean, module.running_var]
    raise TypeError(f"no Keras layer converts to {type(module).__name__}")


def _assign(module: nn.Module, values: list[np.ndarray], where: str) -> None:
    targets = _targets(module)
    if isinstance(module, nn.Conv2d):
        tensors = [_torch_kernel(values[0], module), *map(torch.from_numpy, values[1:])]
    else:
        tensors = [torch.from_numpy(value) for value in values]
    shapes, needed = [tuple(t.shape) for t in tensors], [tuple(t.shape) for t in targets]
    if shapes != needed:
        raise CnnlabError(
            f"{where} holds arrays {shapes} where the model needs {needed}: not this model's Keras weights"
        )
    for target, tensor in zip(targets, tensors):
        target.copy_(tensor)


@torch.no_grad()
def load_keras_weights(backbone: nn.Module, path: str | Path, bgr: bool = False) -> None:
    """Load a Keras application's ``.h5`` weights into its twin ``backbone``; ``bgr``: the weights expect BGR
    input, so the first conv's input channels are flipped to take RGB.

    Layers are matched by Keras name; a file whose names differ (an older Keras' naming) is matched by
    position among the layers with weights, as Keras' own ``load_weights`` does. Arrays of a layer the twin
    computes without parameters (Normalization's mean and variance) are skipped; any other layer missing,
    left over or of another shape is a :class:`CnnlabError`.
    """
    arrays = read_keras_h5(path)
    layers = keras_layers(backbone)
    with_weights = [layer for layer in layers if layer.modules]
    arrays = {
        name: values
        for name, values in arrays.items()
        if name not in {layer.name for layer in layers if not layer.modules}
    }
    if {layer.name for layer in with_weights} == set(arrays):
        pairs = [(layer, arrays[layer.name], f"{path}: Keras layer {layer.name}") for layer in with_weights]
    elif len(arrays) == len(with_weights):
        pairs = [
            (layer, values, f"{path}: its layer {name} (for {layer.name})")
            for layer, (name, values) in zip(with_weights, arrays.items())
        ]
    else:
        raise CnnlabError(
            f"{path} holds {len(arrays)} Keras layers with weights, {keras_twin(backbone)} has {len(with_weights)}: "
            "not this model's Keras weights"
        )
    for layer, values, where in pairs:
        (module,) = (backbone.get_submodule(m) for m in layer.modules)
        _assign(module, values, where)
    if bgr:
        stem = backbone.get_submodule(with_weights[0].modules[0])
        stem.weight.copy_(stem.weight.flip(1))


if __name__ == "__main__":  # python -m cnnlab.models.keras_weights APPLICATION [IMG_SIZE]
    import sys

    print(fetch_keras_weights(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 224))
