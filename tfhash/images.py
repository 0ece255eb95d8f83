"""Reading image files into the arrays an encoder takes, with Pillow alone (no TensorFlow).

Example:

>>> image = read_image("query.jpg", (32, 32, 3))   # float32 (32, 32, 3), raw pixels 0-255
>>> batch = read_images(["a.png", "b.jpg"], (32, 32, 3))   # float32 (2, 32, 32, 3)
"""

import numpy as np

from tfhash.errors import TfhashError, check


def read_image(path, image_shape):
    """The image file at ``path`` as float32 pixels (0-255) of ``image_shape`` ``(h, w, c)``:
    converted to grayscale (c = 1) or RGB (c = 3) and resized to ``(h, w)``.

    Raises `TfhashError` naming the file when it is missing or not an image.
    """
    from PIL import Image

    check(len(image_shape) == 3 and image_shape[-1] in (1, 3),
          f"`image_shape` must be (height, width, 1 or 3), got {tuple(image_shape)}")
    h, w, c = (int(n) for n in image_shape)
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("L" if c == 1 else "RGB").resize((w, h)),
                               np.float32)
    except (OSError, ValueError) as error:
        raise TfhashError(f"cannot read image {path}: {error}") from None
    return array.reshape(h, w, c)


def read_images(paths, image_shape):
    """The image files at ``paths`` as one float32 batch ``(len(paths), *image_shape)``
    (each as `read_image` reads it)."""
    return np.stack([read_image(path, image_shape) for path in paths])
