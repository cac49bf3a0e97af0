"""cnnlab's twins of keras.applications models against live Keras (torch backend): each Keras application with
random weights is saved in the legacy .h5 format of Keras' ImageNet weight files, loaded through cnnlab's
converter, and run on the same image; the studies' freeze counts come from the live Keras model."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported: no TensorFlow or JAX needed

import h5py
import keras
import numpy as np
import pytest
import torch
from conftest import read_results, run_dirs
from fakedata import write_fruits360
from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

from cnnlab.errors import CnnlabError
from cnnlab.models.keras_applications import KerasApplication
from cnnlab.models.keras_layers import apply_keras_defaults, keras_layers
from cnnlab.models.keras_weights import KERAS_WEIGHTS, fetch_keras_weights
from cnnlab.training.freeze import TopK, trainable_base_params

PREPROCESS = {  # what a Keras study feeds its base model, from an image in 0..255
    "ResNet50": keras.applications.resnet50.preprocess_input,
    "MobileNetV2": keras.applications.mobilenet_v2.preprocess_input,
    "EfficientNetV2B0": keras.applications.efficientnet_v2.preprocess_input,  # the model's own layers do it
}
# application -> image sizes: the studies' (S3 32, S4 96, S1 128) and an odd one (TF "same" padding's other case)
SIZES = {"ResNet50": [32, 96], "MobileNetV2": [128, 75], "EfficientNetV2B0": [96, 75]}


def keras_base(application: str, img_size: int) -> keras.Model:
    """``keras.applications.<application>(weights=None, include_top=False)`` as the studies built it, with random
    BatchNorm statistics (moving mean and variance are part of the weights to convert)."""
    keras.backend.clear_session()  # layer names as in a fresh process (no input_layer_6)
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, application)(
        weights=None, include_top=False, input_shape=(img_size, img_size, 3)
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = (w.shape for w in layer.get_weights())
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma),
                    rng.normal(0, 0.1, beta),
                    rng.normal(0, 0.1, mean),
                    rng.uniform(0.5, 1.5, variance),
                ]
            )
    return model


def save_legacy_h5(model: keras.Model, path) -> None:
    """Save weights as Keras' downloadable ImageNet files are stored: layer_names/weight_names HDF5 groups."""
    with h5py.File(path, "w") as file:
        save_weights_to_hdf5_group(file, model)


@pytest.mark.parametrize(
    ("application", "img_size"), [(a, s) for a, sizes in SIZES.items() for s in sizes], ids=lambda v: str(v)
)
def test_twin_with_converted_weights_computes_what_keras_computes(application, img_size, tmp_path):
    model = keras_base(application, img_size)
    save_legacy_h5(model, tmp_path / "weights.h5")
    net = KerasApplication(
        5, img_size=img_size, application=application, weights_file=str(tmp_path / "weights.h5")
    ).eval()
    keras_head = keras.layers.Dense(5)

    images = np.random.default_rng(1).uniform(0, 1, (2, img_size, img_size, 3)).astype("float32")
    keras_features = keras.ops.convert_to_numpy(
        keras.ops.mean(model(PREPROCESS[application](images * 255), training=False), axis=(1, 2))
    )
    keras_logits = keras.ops.convert_to_numpy(keras_head(keras_features))
    kernel, bias = keras_head.get_weights()
    with torch.no_grad():
        net.head[-1].weight.copy_(torch.from_numpy(kernel.T))
        net.head[-1].bias.copy_(torch.from_numpy(bias))
        # cnnlab's input: the RGB image in [0, 1], normalized with the twin's mean and std
        norm = net.input_normalization
        mean, std = (torch.tensor(norm[key]).view(1, 3, 1, 1) for key in ("mean", "std"))
        inputs = (torch.from_numpy(images).permute(0, 3, 1, 2) - mean) / std
        features, logits = net.backbone(inputs).numpy(), net(inputs).numpy()

    scale = max(1.0, float(np.abs(keras_features).max()))  # ResNet50's Caffe inputs span +-150
    assert features.shape == keras_features.shape
    assert np.abs(features - keras_features).max() <= 1e-4 * scale
    assert np.abs(logits - keras_logits).max() <= 1e-4 * scale
    assert (
        sum(p.numel() for p in net.backbone.parameters())
        + sum(b.numel() for name, b in net.backbone.named_buffers() if name.endswith(("running_mean", "running_var")))
        == model.count_params()
    )


def keras_trainable(model: keras.Model, count: int) -> int:
    """Trainable parameters of a Keras base model whose last ``count`` layers train, the studies' way."""
    model.trainable = True
    for index, layer in enumerate(model.layers):
        layer.trainable = index >= len(model.layers) - count
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("application", sorted(SIZES))
def test_freeze_counts_come_from_the_live_keras_model(application):
    """The twin's Keras layers are the live model's, and "the last N layers train" trains the same parameters
    (N: every 13th and the studies': S1 10, 20, all of MobileNetV2; S3 3 and S4 50 of ResNet50; S4 50 of
    EfficientNetV2B0)."""
    model = keras_base(application, 32)
    net = KerasApplication(3, img_size=32, application=application, weights=None)
    assert [layer.name for layer in keras_layers(net.backbone)] == [layer.name for layer in model.layers]
    counts = {0, 1, 2, 3, 10, 20, 50, len(model.layers)} | set(range(0, len(model.layers), 13))
    for count in sorted(counts):
        TopK(count, layers="keras").apply(net)
        assert trainable_base_params(net) == keras_trainable(model, count), count


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(CnnlabError) as error:
        KerasApplication(3, img_size=128, application="MobileNetV2", weights_file=str(tmp_path / "absent.h5"))
    message = str(error.value)
    expected = KERAS_WEIGHTS["MobileNetV2"](128)
    assert "\n" not in message and str(tmp_path / "absent.h5") in message
    assert (
        expected.url in message
        and expected.file_name == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5"
    )
    assert "pip install 'cnnlab[keras]' && python -m cnnlab.models.keras_weights MobileNetV2 128" in message


def test_cli_without_the_file_prints_one_line_naming_keras_cache(cnnlab_logged_out):
    """A user without ~/.keras/models/ (an empty HOME) gets one line before any data is read."""
    result = cnnlab_logged_out("experiment=s3_resnet50_transfer_fruits360", "debug=smoke", check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    home = cnnlab_logged_out.cwd / "home"
    assert last.startswith(
        f"cnnlab: error: Keras ImageNet weights for ResNet50 not found at "
        f"{home}/.keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5: download "
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
    ), result.stderr[-2000:]


def test_another_models_file_is_a_clear_error(tmp_path):
    save_legacy_h5(keras_base("MobileNetV2", 32), tmp_path / "mobilenetv2.h5")
    with pytest.raises(CnnlabError, match="not this model's Keras weights"):
        KerasApplication(3, img_size=32, application="ResNet50", weights_file=str(tmp_path / "mobilenetv2.h5"))


def test_a_file_with_other_layer_names_loads_by_position(tmp_path):
    """Keras' own load_weights matches legacy files by position among layers with weights: so does cnnlab
    when the names differ (older Keras versions named ResNet50's layers res2a_branch2a...)."""
    model = keras_base("MobileNetV2", 32)
    save_legacy_h5(model, tmp_path / "named.h5")
    with h5py.File(tmp_path / "named.h5", "a") as file:
        names = [str(n) for n in file.attrs["layer_names"]]
        for name in names:
            file.move(name, f"old_{name}")
        file.attrs["layer_names"] = [f"old_{n}".encode() for n in names]
    by_name = KerasApplication(3, img_size=32, application="MobileNetV2", weights_file=str(tmp_path / "named.h5"))
    save_legacy_h5(model, tmp_path / "plain.h5")
    plain = KerasApplication(3, img_size=32, application="MobileNetV2", weights_file=str(tmp_path / "plain.h5"))
    for (key, a), b in zip(by_name.backbone.state_dict().items(), plain.backbone.state_dict().values()):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("application", sorted(SIZES))
def test_batchnorms_keep_the_keras_models_settings_under_keras_defaults(application):
    """The studies' model.keras_defaults=true leaves a twin's BatchNorms with its Keras layers' epsilon and momentum."""
    model = keras_base(application, 32)
    net = apply_keras_defaults(KerasApplication(3, img_size=32, application=application, weights=None))
    checked = 0
    for layer in keras_layers(net.backbone):
        keras_layer = model.get_layer(layer.name)
        if isinstance(keras_layer, keras.layers.BatchNormalization):
            (module,) = (net.backbone.get_submodule(m) for m in layer.modules)
            assert module.eps == pytest.approx(keras_layer.epsilon) and module.momentum == pytest.approx(
                1 - keras_layer.momentum
            ), layer.name
            checked += 1
    assert checked == sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.backbone.modules())


def test_s3_transfer_run_trains_from_a_local_keras_file(cnnlab, tmp_path):
    """The user's path: the S3 experiment with model.net.weights_file=FILE trains its last three Keras layers and
    keeps every frozen layer at the file's weights."""
    save_legacy_h5(keras_base("ResNet50", 32), tmp_path / "resnet50.h5")
    write_fruits360(tmp_path / "data" / "fruits-360", train=5, test=2)
    cnnlab(
        "experiment=s3_resnet50_transfer_fruits360",
        "debug=smoke",
        f"paths.data_dir={tmp_path / 'data'}",
        f"model.net.weights_file={tmp_path / 'resnet50.h5'}",
    )
    (run,) = run_dirs(cnnlab.cwd)
    results = read_results(run)
    assert results["status"] == "completed" and results["trainable_params_base"] == 4_096
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    with h5py.File(tmp_path / "resnet50.h5") as file:
        kernel = torch.from_numpy(np.asarray(file["conv5_block3_2_conv"]["conv5_block3_2_conv/kernel"]))
    assert torch.equal(state["net.backbone.layer4.2.conv2.weight"], kernel.permute(3, 2, 0, 1))


def test_file_names_urls_and_hashes_are_keras_own(monkeypatch):
    """What cnnlab asks Keras to fetch is what keras.applications itself downloads (its source's constants)."""
    from keras.src.applications import efficientnet_v2, mobilenet_v2, resnet

    expected = {
        "ResNet50": (
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            resnet.BASE_WEIGHTS_PATH,
            resnet.WEIGHTS_HASHES["resnet50"][1],
        ),
        "MobileNetV2": (
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5",
            mobilenet_v2.BASE_WEIGHT_PATH,
            None,
        ),
        "EfficientNetV2B0": (
            "efficientnetv2-b0_notop.h5",
            efficientnet_v2.BASE_WEIGHTS_PATH,
            efficientnet_v2.WEIGHTS_HASHES["b0"][1],
        ),
    }
    fetched = []
    monkeypatch.setattr(
        keras.utils,
        "get_file",
        lambda name, url, cache_subdir, file_hash: fetched.append((name, url, file_hash)) or name,
    )
    for application, (name, base_url, file_hash) in expected.items():
        assert fetch_keras_weights(application, 128).name == name
        assert fetched.pop() == (name, base_url + name, file_hash)
