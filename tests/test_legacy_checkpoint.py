"""The original Keras 2 code's SRResNet checkpoint loads into get_model("srresnet")."""
import cli

cli.import_keras_quietly()
import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import model as models  # noqa: E402
from conftest import LEGACY_CHECKPOINT, require  # noqa: E402


@pytest.fixture(scope="module")
def legacy_path():
    return require(LEGACY_CHECKPOINT)


def stored_layer_weights(path):
    """[(layer name, [arrays])] of the layers with weights, in the file's order."""
    def text(value):
        return value.decode() if isinstance(value, bytes) else value

    with h5py.File(path, "r") as handle:
        group = handle["model_weights"]
        layers = []
        for name in map(text, group.attrs["layer_names"]):
            names = [text(w) for w in group[name].attrs["weight_names"]]
            if names:
                layers.append((name, [group[name][w][()] for w in names]))
        return layers


def test_every_layer_of_the_legacy_checkpoint_is_assigned(legacy_path):
    model = models.get_model("srresnet")
    models.load_weights(model, legacy_path)
    stored = stored_layer_weights(legacy_path)
    ours = [layer for layer in model.layers if layer.weights]
    assert len(stored) == len(ours) == 85
    for (name, arrays), layer in zip(stored, ours):
        kind = type(layer).__name__.lower()
        assert name.replace("_", "").startswith(kind[:6].replace("_", "")), (name, kind)
        assert len(arrays) == len(layer.get_weights())
        for array, loaded in zip(arrays, layer.get_weights()):
            np.testing.assert_array_equal(array, loaded)


def test_legacy_checkpoint_denoises_exactly_like_the_original_graph(legacy_path):
    """The file also stores the original model's graph: rebuilt by Keras, it must agree with ours."""
    original = keras.models.load_model(legacy_path, compile=False, custom_objects={"PSNR": models.psnr})
    ours = models.get_model("srresnet")
    models.load_weights(ours, legacy_path)
    batch = np.random.default_rng(0).uniform(0, 255, (2, 40, 56, 3)).astype(np.float32)
    np.testing.assert_allclose(ours.predict(batch, verbose=0), original.predict(batch, verbose=0), atol=1e-3)


def test_legacy_checkpoint_into_the_wrong_architecture_fails(legacy_path):
    with pytest.raises(ValueError, match="it fits a srresnet"):
        models.load_weights(models.get_unet_model(start_filters=4), legacy_path)  # (any UNet: few filters)
