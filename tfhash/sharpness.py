"""Sharpness-aware minimization (SAM) as a Keras model that wraps the one it trains.

`SharpnessAware` trains a compiled model with the update of Foret et al., "Sharpness-Aware
Minimization for Efficiently Improving Generalization" (ICLR 2021): each step takes the
batch's gradient ``g`` at the weights ``w``, moves to ``w + radius * g / ||g||`` (the
steepest ascent within that radius), takes the gradient there and hands that one to the
optimizer at ``w``. The loss it minimizes is the worst loss within the radius, which favours
flat minima; a step costs two forward and backward passes.
"""

import keras
import tensorflow as tf

from tfhash.errors import check, check_number


@keras.saving.register_keras_serializable(package="tfhash")
class SharpnessAware(keras.Model):
    """Trains ``model`` with sharpness-aware steps; predicts and evaluates as ``model``.

    Compile and fit the wrapper as you would the model; the model's own weights are the
    ones trained, so after ``fit`` use (and save) ``model`` itself. The wrapper saves and
    loads as a ``.keras`` file too (its config holds the model's), to resume training.
    The reported loss and metrics are those at the weights before the ascent, as a plain
    step reports them. Batch-normalization statistics and every other state the perturbed
    pass would change (its moving averages, per-output loss trackers) are kept from the
    first pass, so they describe the weights being trained. Random-generator states move
    on with both passes. Under a `tf.distribute` strategy each replica ascends along its
    own share of the batch, as the SAM paper's accelerators do, and the optimizer averages
    the replicas' gradients at their ascended weights.

    Args:
        model: the Keras model to train.
        radius: the radius ``rho`` of the neighbourhood, a number > 0 (the paper's
            default for CIFAR-10 is 0.05).

    Example:

    >>> inputs = keras.Input((4,))
    >>> classifier = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    >>> trainer = SharpnessAware(classifier, radius=0.05)
    >>> trainer.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
    ...                 metrics=["accuracy"])
    >>> history = trainer.fit(np.ones((8, 4)), np.arange(8) % 3, epochs=2, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'loss']
    >>> classifier.predict(np.ones((2, 4)), verbose=0).shape  # the trained model itself
    (2, 3)
    """

    def __init__(self, model, radius=0.05, **kwargs):
        check(isinstance(model, keras.Model),
              f"`model` must be a keras.Model, got {type(model).__name__}")
        radius = check_number(radius, "radius", low=0, low_open=True)
        super().__init__(name=kwargs.pop("name", f"{model.name}_sam"), **kwargs)
        self.model = model
        self.radius = radius
        self.built = model.built  # its weights are the model's (a backup needs them now)

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def get_config(self):
        return {**super().get_config(), "radius": self.radius,
                "model": keras.saving.serialize_keras_object(self.model)}

    @classmethod
    def from_config(cls, config):
        model = keras.saving.deserialize_keras_object(config.pop("model"))
        return cls(model, **config)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        weights = self.trainable_variables
        y_pred, loss, gradients = self._loss_and_gradients(x, y, sample_weight, weights)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss, sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
        metrics = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        # the perturbed pass must not move the first pass's states: keep their values
        kept = [v for v in self.non_trainable_variables + [
            v for m in self.metrics for v in m.variables] if keras.backend.is_float_dtype(v.dtype)]
        values = [tf.identity(v.value) for v in kept]
        scale = self.radius / (tf.linalg.global_norm(gradients) + 1e-12)
        steps = [None if g is None else tf.cast(g * scale, w.dtype)
                 for g, w in zip(gradients, weights)]
        for weight, step in zip(weights, steps):
            if step is not None:
                weight.assign_add(step)
        _, _, sharp_gradients = self._loss_and_gradients(x, y, sample_weight, weights)
        for weight, step in zip(weights, steps):
            if step is not None:
                weight.assign_sub(step)
        for variable, value in zip(kept, values):
            variable.assign(value)
        self.optimizer.apply(sharp_gradients, weights)
        return metrics

    def _loss_and_gradients(self, x, y, sample_weight, weights):
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                     training=True)
            scaled = self.optimizer.scale_loss(loss)
        return y_pred, loss, tape.gradient(scaled, weights)
