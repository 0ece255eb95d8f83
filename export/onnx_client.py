"""Search a tfhash index with query images encoded by ONNX Runtime: no TensorFlow needed.

    python export/onnx_client.py serving/tfhash-1.onnx query1.png query2.jpg
    python export/onnx_client.py serving/tfhash-1.onnx query.png --index photos.index --k 10

Without ``--index`` it prints each image's code, as the REST client does; with it, the
ranked hits (ids, Hamming distances, paths when the index stores them). The index must
have been built by the encoder this ONNX file was exported from (`tfhash index build` with
the same `.keras` file), or for an exported query encoder (`query-<bits>.keras`) by its
database encoder: the fingerprint in the file is checked against the index's.
"""

import argparse
import sys

from tfhash.cli import positive_int, print_hits
from tfhash.codes import pack
from tfhash.images import read_images
from tfhash.index import HammingIndex
from tfhash.onnx_encoder import OnnxEncoder


def search(encoder, index_path, image_files, k):
    """``(ids, distances, paths)`` of the ``k`` nearest codes in the index at
    ``index_path`` to each image file's code; ``paths`` is ``None`` when the index has none."""
    index = HammingIndex.load(index_path, bits=encoder.bits,
                              fingerprint=encoder.database_fingerprint)
    ids, distances = index.search(encoder.encode(read_images(image_files, encoder.image_shape)),
                                  k)
    return ids, distances, index.paths_of(ids)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an .onnx file from `tfhash export`")
    parser.add_argument("images", nargs="+", help="JPEG or PNG files")
    parser.add_argument("--index", default=None, help="index folder to search")
    parser.add_argument("--k", type=positive_int, default=10,
                        help="hits per query (with --index)")
    args = parser.parse_args(argv)
    try:
        encoder = OnnxEncoder(args.model)
        if args.index is None:
            images = read_images(args.images, encoder.image_shape)
            for path, code in zip(args.images, encoder.encode(images)):
                bits = "".join("1" if c > 0 else "0" for c in code)
                print(f"{path}\t{bits}\tpacked={pack(code[None])[0].tolist()}")
            return 0
        ids, distances, paths = search(encoder, args.index, args.images, args.k)
    except (ValueError, OSError) as error:  # TfhashError is a ValueError
        print(f"onnx_client: error: {error}", file=sys.stderr)
        return 2
    print_hits(args.images, ids, distances, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
