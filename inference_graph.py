"""The inference graph: a trained network rewritten to compute the same output sooner, which test_model.py and
benchmarks/real_photos.py denoise with (train.py validates and saves the network as it is).

Two rewrites, exact up to float rounding: each convolution followed by a batch normalisation becomes one
convolution (Keras upcasts normalisation to float32 under mixed precision, a pass of its own), and each PReLU
computes max(x, slope * x) in two passes over the feature map instead of Keras' five. Float32 output within
2e-4 grey levels of the network's (tests/test_networks.py); speed in benchmarks/RESULTS.md.
"""
import keras
import numpy as np
from keras import layers, ops


def _input_names(node):
    """Names of the layers whose outputs a serialised node (a functional layer config's inbound_nodes, or a part
    of one) takes in: every `keras_history` in it."""
    if isinstance(node, dict):
        if "keras_history" in node:
            return [node["keras_history"][0]]
        return [name for value in node.values() for name in _input_names(value)]
    if isinstance(node, (list, tuple)):
        return [name for item in node for name in _input_names(item)]
    return []


def _layer_graph(network):
    """({layer: [layers it takes in]}, {layer: [layers that take it in]}) by name, from the functional config."""
    configs = network.get_config()["layers"]
    parents = {config["name"]: _input_names(config["inbound_nodes"]) for config in configs}
    consumers = {name: [user for user, inputs in parents.items() if name in inputs] for name in parents}
    return parents, consumers


def _batch_norms_to_fold(network, consumers):
    """{Conv2D name: BatchNormalization name} for each convolution with a bias whose only consumer is a batch
    normalisation over its channels."""
    layer = network.get_layer
    return {name: users[0] for name, users in consumers.items()
            if isinstance(layer(name), layers.Conv2D) and layer(name).use_bias and len(users) == 1
            and isinstance(layer(users[0]), layers.BatchNormalization) and layer(users[0]).axis in (-1, 3)}


def _prelus_to_rewrite(network, parents, consumers, folded):
    """{PReLU name: the Conv2D that produces its input} for the PReLUs with one slope per channel that can become
    max(x, slope * x): all slopes at most 1, or else a convolution (its normalisation folded) feeding the PReLU
    alone and only convolutions taking its output in, so that the channels with slopes above 1 can be flipped."""
    layer, conv_of_norm = network.get_layer, {norm: conv for conv, norm in folded.items()}
    rewrite = {}
    for name, inputs in parents.items():
        if not isinstance(layer(name), layers.PReLU) or tuple(layer(name).alpha.shape[:-1]) != (1, 1):
            continue
        producer = conv_of_norm.get(inputs[0], inputs[0])
        alone = len(consumers[inputs[0]]) == 1 and isinstance(layer(producer), layers.Conv2D)
        if np.all(np.asarray(layer(name).alpha) <= 1) or (
                alone and all(isinstance(layer(user), layers.Conv2D) for user in consumers[name])):
            rewrite[name] = producer
    return rewrite


def _folded_conv_weights(conv, batch_norm):
    """The [kernel, bias] of `conv` followed by `batch_norm` in inference mode, as one convolution: the kernel's
    output channels scaled by gamma / sqrt(variance + epsilon), the bias shifted; float64."""
    kernel, bias = (np.asarray(weight, np.float64) for weight in (conv.kernel, conv.bias))
    mean, variance = (np.asarray(weight, np.float64) for weight in (batch_norm.moving_mean,
                                                                    batch_norm.moving_variance))
    gamma = np.asarray(batch_norm.gamma, np.float64) if batch_norm.scale else 1.0
    beta = np.asarray(batch_norm.beta, np.float64) if batch_norm.center else 0.0
    scale = gamma / np.sqrt(variance + batch_norm.epsilon)
    return [kernel * scale, (bias - mean) * scale + beta]


def _inference_weights(network, consumers, folded, rewritten):
    """{layer name: float64 weights} of inference_network's changed layers. A PReLU slope a > 1 becomes 1 / a on
    flipped signs: the producing convolution negates that channel (z = -x), max(z, z / a) is -x / a for x >= 0
    and -x below, and the consuming convolutions scale that input channel by -a: x and a * x, PReLU's values."""
    layer = network.get_layer
    weights = {conv: _folded_conv_weights(layer(conv), layer(norm)) for conv, norm in folded.items()}

    def conv_weights(name):  # the weights changed so far, else the network's own
        return weights.setdefault(name, [np.asarray(weight, np.float64) for weight in layer(name).weights])

    for name, producer in rewritten.items():
        alpha = np.asarray(layer(name).alpha, np.float64)  # (1, 1, channels)
        flipped = alpha > 1
        weights[name] = [np.where(flipped, 1 / np.where(flipped, alpha, 1.0), alpha)]  # no 1 / 0 for zero slopes
        if flipped.any():
            kernel, bias = conv_weights(producer)
            sign = np.where(flipped, -1.0, 1.0).reshape(-1)
            weights[producer] = [kernel * sign, bias * sign]
            for user in consumers[name]:
                kernel, bias = conv_weights(user)
                weights[user] = [kernel * np.where(flipped, -alpha, 1.0).reshape(1, 1, -1, 1), bias]
    return weights


class _FoldedBatchNorm(layers.Layer):
    """Where inference_network took a batch normalisation into its convolution: passes its input on (accepting
    the `mask` argument the normalisation's node was called with)."""

    def call(self, inputs, mask=None):
        return inputs


class _MaxPReLU(layers.Layer):
    """PReLU as max(x, slope * x), exact for slopes up to 1: two passes over the feature map where Keras' PReLU
    makes five (relu, negate, relu, multiply, add)."""

    def __init__(self, slope_shape, **kwargs):
        super().__init__(**kwargs)
        self.slope = self.add_weight(shape=slope_shape, initializer="zeros", trainable=False, name="slope")

    def call(self, inputs):
        return ops.maximum(inputs, ops.cast(self.slope, inputs.dtype) * inputs)


def inference_network(network):
    """A copy of `network` for inference, the same float32 output up to rounding, sooner (the module's two
    rewrites; _inference_weights says how slopes above 1 stay exact). A network with neither comes back as it is."""
    parents, consumers = _layer_graph(network)
    folded = _batch_norms_to_fold(network, consumers)
    rewritten = _prelus_to_rewrite(network, parents, consumers, folded)
    if not folded and not rewritten:
        return network

    def clone(layer):
        if layer.name in rewritten:
            return _MaxPReLU(layer.alpha.shape, name=layer.name)
        if layer.name in folded.values():
            return _FoldedBatchNorm(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(network, clone_function=clone)
    changed = _inference_weights(network, consumers, folded, rewritten)
    for layer in copy.layers:
        if layer.weights:
            layer.set_weights([np.asarray(weight, np.float32) for weight in changed[layer.name]]
                              if layer.name in changed else network.get_layer(layer.name).get_weights())
    return copy
