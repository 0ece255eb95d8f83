"""gRPC client for a tfhash encoder served by TF Serving (port 8500).

Needs ``pip install tensorflow-serving-api grpcio`` (the same TF major version as tfhash).

    python export/grpc_client.py --target localhost:8500 --name tfhash image1.png image2.jpg
"""

import argparse
import sys


def build_predict_request(name, image_bytes_list, signature="encode_images"):
    """A `PredictRequest` carrying encoded image bytes for the ``encode_images`` signature."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(image_bytes_list,
                                                                dtype=tf.string))
    return request


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--target", default="localhost:8500")
    parser.add_argument("--name", default="tfhash")
    args = parser.parse_args()
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    payload = []
    for path in args.images:
        with open(path, "rb") as handle:
            payload.append(handle.read())
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(args.target))
    try:
        response = stub.Predict(build_predict_request(args.name, payload), timeout=30)
    except grpc.RpcError as error:
        print(f"grpc_client: error: {error.details()}", file=sys.stderr)
        return 2
    codes = tf.make_ndarray(response.outputs["codes"])
    for path, row in zip(args.images, codes):
        print(path, "".join("1" if c > 0 else "0" for c in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
