"""SharpnessAware: one step against the SAM update worked out by hand in numpy."""

import keras
import numpy as np
import pytest

from tfhash import data, model
from tfhash.sharpness import SharpnessAware

from reference import mse_gradient, sam_gradient

RADIUS = 0.5
LEARNING_RATE = 0.1


@pytest.fixture()
def regression():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(8, 3)).astype("float32"),
            rng.normal(size=(8, 1)).astype("float32"))


def linear_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


def one_step(trainer, x, y, **compile_args):
    trainer.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), **compile_args)
    return trainer.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history


def test_one_step_is_the_gradient_at_the_ascended_weights(regression):
    x, y = regression
    linear = linear_model()
    kernel, bias = linear.get_weights()
    history = one_step(SharpnessAware(linear, radius=RADIUS), x, y, loss="mse",
                       metrics=["mae"])
    loss, grad_kernel, _ = mse_gradient(x, y, kernel, bias)
    sharp_kernel, sharp_bias = sam_gradient(x, y, kernel, bias, RADIUS)
    new_kernel, new_bias = linear.get_weights()
    np.testing.assert_allclose(new_kernel, kernel - LEARNING_RATE * sharp_kernel, rtol=1e-5)
    np.testing.assert_allclose(new_bias, bias - LEARNING_RATE * sharp_bias, rtol=1e-5)
    # not the plain step: the two gradients differ here by far more than the tolerance
    assert np.abs(new_kernel - (kernel - LEARNING_RATE * grad_kernel)).max() > 1e-2
    # loss and metrics are reported at the weights before the ascent, as a plain step's
    assert history["loss"][0] == pytest.approx(loss, rel=1e-5)
    assert history["mae"][0] == pytest.approx(np.abs(x @ kernel + bias - y).mean(), rel=1e-5)


def test_batch_statistics_come_from_the_weights_being_trained(regression):
    x, y = regression
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, use_bias=False)(inputs)
    normed = keras.layers.BatchNormalization(momentum=0.5)(hidden)
    net = keras.Model(inputs, keras.layers.Dense(1)(normed))
    kernel = net.get_weights()[0]
    one_step(SharpnessAware(net, radius=RADIUS), x, y, loss="mse")
    features = x @ kernel  # the first pass's, before any step; the statistics start at 0, 1
    norm = net.layers[2]
    np.testing.assert_allclose(norm.moving_mean.numpy(), 0.5 * features.mean(axis=0),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(norm.moving_variance.numpy(), 0.5 + 0.5 * features.var(axis=0),
                               rtol=1e-4)


def test_per_output_losses_are_reported_before_the_ascent(regression):
    x, y = regression
    inputs = keras.Input((3,))
    net = keras.Model(inputs, {"a": keras.layers.Dense(1, name="a")(inputs),
                               "b": keras.layers.Dense(1, name="b")(inputs)})
    (kernel_a, bias_a), (kernel_b, bias_b) = (net.get_layer(n).get_weights() for n in "ab")
    history = one_step(SharpnessAware(net, radius=RADIUS), x, {"a": y, "b": -y},
                       loss={"a": "mse", "b": "mse"})
    loss_a = mse_gradient(x, y, kernel_a, bias_a)[0]
    loss_b = mse_gradient(x, -y, kernel_b, bias_b)[0]
    assert history["a_loss"][0] == pytest.approx(loss_a, rel=1e-5)
    assert history["b_loss"][0] == pytest.approx(loss_b, rel=1e-5)
    assert history["loss"][0] == pytest.approx(loss_a + loss_b, rel=1e-5)


def test_predicts_and_evaluates_as_the_wrapped_model(regression):
    x, y = regression
    linear = linear_model()
    trainer = SharpnessAware(linear, radius=0.05)
    trainer.compile(optimizer="sgd", loss="mse")
    np.testing.assert_allclose(trainer.predict(x, verbose=0), linear.predict(x, verbose=0))
    kernel, bias = linear.get_weights()
    assert trainer.evaluate(x, y, verbose=0) == pytest.approx(
        mse_gradient(x, y, kernel, bias)[0], rel=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "classifier"}, "`model` must be a keras.Model, got str"),
    ({"radius": 0.0}, "`radius` must be a number > 0, got 0.0"),
    ({"radius": -0.05}, "`radius` must be a number > 0, got -0.05"),
    ({"radius": True}, "`radius` must be a number > 0, got True"),
])
def test_bad_arguments_are_refused_by_name(kwargs, message):
    arguments = {"model": linear_model(), "radius": 0.05, **kwargs}
    with pytest.raises(ValueError, match=message):
        SharpnessAware(**arguments)


@pytest.mark.parametrize("value", [0.0, -0.05, True, "0.05", float("nan")])
def test_train_config_refuses_a_bad_sam_radius(value):
    with pytest.raises(ValueError, match="`sam_radius` must be None or a number > 0"):
        model.TrainConfig(sam_radius=value)


@pytest.mark.parametrize("value", [1, np.float32(0.05)])
def test_a_radius_of_any_number_type_is_kept_as_a_float(value):
    for radius in (SharpnessAware(linear_model(), radius=value).radius,
                   model.TrainConfig(sam_radius=value).sam_radius):
        assert type(radius) is float and radius == pytest.approx(float(value))


def test_pretrain_with_sam_returns_the_plain_classifier(monkeypatch, tmp_path):
    wrapped = []
    real = model.SharpnessAware

    def spy(classifier, radius):
        wrapped.append(radius)
        return real(classifier, radius)

    monkeypatch.setattr(model, "SharpnessAware", spy)
    mnist = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.1)
    small = data.Split("cnnh", 0, mnist.train.take(slice(0, 256)), mnist.val.take(slice(0, 64)),
                       mnist.query, mnist.database)
    config = model.TrainConfig(pretrain_epochs=2, batch_size=64, backbone_width=4,
                               sam_radius=0.05, ema_momentum=0.9)
    backbone = config.make_backbone(small.train.images.shape[1:])
    start = [w.copy() for w in backbone.get_weights()]
    # with the callbacks a run gets: weight averaging, and a backup under a work_dir
    classifier, history = model.pretrain(backbone, small, 10, config, work_dir=tmp_path,
                                         verbose=0)
    assert wrapped == [0.05]
    assert classifier.__class__.__name__ == "Functional"
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(start, backbone.get_weights()))
    assert classifier.predict(small.query.images[:4], verbose=0).shape == (4, 10)


def test_saves_and_loads_as_a_keras_file(regression, tmp_path):
    x, y = regression
    trainer = SharpnessAware(linear_model(), radius=0.05)
    one_step(trainer, x, y, loss="mse")
    trainer.save(tmp_path / "trainer.keras")
    loaded = keras.saving.load_model(tmp_path / "trainer.keras")
    assert isinstance(loaded, SharpnessAware) and loaded.radius == 0.05
    np.testing.assert_allclose(loaded.predict(x, verbose=0), trainer.predict(x, verbose=0),
                               rtol=1e-6)
    one_step(loaded, x, y, loss="mse")  # and trains on
