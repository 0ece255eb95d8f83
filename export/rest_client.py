"""REST client for a tfhash encoder served by TF Serving (``/v1/models/<name>:predict``).

    python export/rest_client.py --url http://localhost:8501 --name tfhash image1.png image2.jpg

`build_request` is the single place the request body is made; the tests feed exactly that
body to the exported SavedModel, so what works here works against the server.
"""

import argparse
import base64
import json
import sys
import urllib.request

import numpy as np


def build_request(images=None, image_files=None):
    """The JSON body of a predict request, in TF Serving's row ("instances") format.

    Pass ``images`` (float array ``(batch, h, w, c)``, raw pixels) for ``serving_default``,
    or ``image_files`` (paths of JPEG/PNG files) for ``encode_images`` as ``{"b64": ...}``.
    """
    if (images is None) == (image_files is None):
        raise ValueError("pass exactly one of `images` or `image_files`")
    if images is not None:
        return {"signature_name": "serving_default",
                "instances": np.asarray(images, np.float32).tolist()}
    encoded = []
    for path in image_files:
        with open(path, "rb") as handle:
            encoded.append({"b64": base64.b64encode(handle.read()).decode("ascii")})
    return {"signature_name": "encode_images", "instances": encoded}


def predict(url, name, body, timeout=30):
    """POSTs ``body`` to the server; returns its list of per-image outputs."""
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v1/models/{name}:predict",
        data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["predictions"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="JPEG or PNG files")
    parser.add_argument("--url", default="http://localhost:8501")
    parser.add_argument("--name", default="tfhash")
    args = parser.parse_args()
    try:
        rows = predict(args.url, args.name, build_request(image_files=args.images))
    except OSError as error:
        print(f"rest_client: error: {error}", file=sys.stderr)
        return 2
    for path, row in zip(args.images, rows):
        bits = "".join("1" if c > 0 else "0" for c in row["codes"])
        print(f"{path}\t{bits}\tpacked={row['packed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
