"""Writes the Keras reference the freeze tests compare cnnlab's Keras layer lists with (not run by the suite).

For each ``keras.applications`` base model the Keras studies fine-tuned (``include_top=False``,
``weights=None``: the layer list and the parameter counts do not depend on the weights), one JSON file
``keras_layers/<timm twin>.json`` lists ``base_model.layers`` in order: each layer's name, class and its
trainable weights with their sizes (BatchNorm moving statistics are non-trainable and left out), so
"the last N layers" of a study can be counted for every N. Run it in a scratch venv, never cnnlab's:

    python3.11 -m venv /tmp/keras-venv && /tmp/keras-venv/bin/pip install keras jax
    KERAS_BACKEND=jax /tmp/keras-venv/bin/python tests/reference/dump_keras_layers.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402  (after the backend is chosen)

BASE = {"include_top": False, "weights": None}
# timm twin (file name) -> the study's base model: keras.applications class and arguments
MODELS = {
    "mobilenetv2_100": ("MobileNetV2", {"input_shape": (128, 128, 3), **BASE}),  # S1
    "resnet50": ("ResNet50", BASE),  # S3, S4
    "tf_efficientnetv2_b0": ("EfficientNetV2B0", BASE),  # S4
    # one channel: Keras' preprocessing then has no Normalization layer (cnnlab's in_chans=1 datasets)
    "tf_efficientnetv2_b0-in_chans1": ("EfficientNetV2B0", {"input_shape": (96, 96, 1), **BASE}),
}
OUT = Path(__file__).parent / "keras_layers"


def layer_rows(model: keras.Model) -> list[list]:
    """[name, class, {trainable weight name: size}] per entry of ``model.layers``."""
    return [
        [layer.name, type(layer).__name__, {w.path.split("/")[-1]: math.prod(w.shape) for w in layer.trainable_weights}]
        for layer in model.layers
    ]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for twin, (name, kwargs) in MODELS.items():
        keras.backend.clear_session()  # layer names restart: the input is "input_layer", not "input_layer_3"
        rows = layer_rows(getattr(keras.applications, name)(**kwargs))
        call = f"keras.applications.{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
        header = json.dumps({"keras_model": call, "keras_version": keras.__version__})
        body = ",\n".join("    " + json.dumps(row) for row in rows)
        (OUT / f"{twin}.json").write_text(f'{header[:-1]}, "layers": [\n{body}\n]}}\n')
        total = sum(size for _, _, weights in rows for size in weights.values())
        print(f"{twin}: {len(rows)} layers, {total:,} trainable parameters")


if __name__ == "__main__":
    main()
