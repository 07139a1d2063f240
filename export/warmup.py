"""Warmup requests (`assets.extra/tf_serving_warmup_requests`): a few PredictRequests that a server
runs when it loads a version, so that the first real request does not pay for tracing and kernel
set-up. TF Serving reads them with --enable_model_warmup; export.server always does."""
import os
from typing import Iterator, List

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from export import signatures

FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def requests(model_name: str, image_size: int, channels: int) -> List[predict_pb2.PredictRequest]:
  """Both image signatures with a small batch at the model's size, and the uint8 signature with
  a colour image of another size, so the resize and channel paths are warmed too."""
  rng = np.random.default_rng(0)
  at_size = rng.integers(0, 256, size=(2, image_size, image_size, channels), dtype=np.uint8)
  other = rng.integers(0, 256, size=(1, 2 * image_size + 3, image_size + 5, 3), dtype=np.uint8)
  encoded = [tf.io.encode_png(image).numpy() for image in at_size]
  return [_request(model_name, signatures.DEFAULT, signatures.IMAGES, at_size),
          _request(model_name, signatures.DEFAULT, signatures.IMAGES, other),
          _request(model_name, signatures.ENCODED, signatures.IMAGE_BYTES, encoded)]


def _request(model_name, signature, input_name, value) -> predict_pb2.PredictRequest:
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
  request.inputs[input_name].CopyFrom(tf.make_tensor_proto(value))
  return request


def write(version_dir: str, predict_requests: List[predict_pb2.PredictRequest]):
  path = os.path.join(version_dir, FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.TFRecordWriter(path) as writer:
    for request in predict_requests:
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())


def read(version_dir: str) -> Iterator[predict_pb2.PredictRequest]:
  """The PredictRequests of a version's warmup file (none if it has no such file)."""
  path = os.path.join(version_dir, FILE)
  if not tf.io.gfile.exists(path):
    return
  for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
    yield prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
