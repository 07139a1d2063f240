"""A small gRPC server with TensorFlow Serving's PredictionService and ModelService, for machines
without TensorFlow Serving (development, tests). Production uses TensorFlow Serving itself
(docker `tensorflow/serving`); clients talk to both with the same gRPC calls.

  python -m export.server --port=8500 --model_name=mnist --model_base_path=/models/mnist

Serves the highest integer version under the base path, runs its warmup requests when it loads,
and switches to a newer version when one appears (a background thread polls the base path).
"""
from concurrent import futures
import dataclasses
import os
import threading
from typing import Dict, Optional

from absl import app
from absl import flags
from absl import logging
import grpc
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import status_pb2

from export import client
from export import saved_model
from export import signatures
from export import warmup
from vaeclust.lib import experiment

FLAGS = flags.FLAGS
# TensorFlow's error codes are gRPC's.
GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


class RequestError(Exception):
  """A request the server refuses; answered with `code` and the message, as TF Serving would."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code


@dataclasses.dataclass(frozen=True)
class Servable:
  """One loaded version: the SavedModel's functions and its SignatureDefs (for checks/metadata)."""
  version: int
  loaded: object
  signature_defs: Dict[str, meta_graph_pb2.SignatureDef]


def load_servable(model_base_path: str, version: int) -> Servable:
  path = os.path.join(model_base_path, str(version))
  with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
    proto = saved_model_pb2.SavedModel.FromString(f.read())
  serve = next(m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags)
  return Servable(version, tf.saved_model.load(path), dict(serve.signature_def))


def predict(servable: Servable, request: predict_pb2.PredictRequest,
            max_batch_size: int = 0) -> predict_pb2.PredictResponse:
  """Checks the request against the signature like TF Serving, then runs it."""
  name = request.model_spec.signature_name or signatures.DEFAULT
  if name not in servable.loaded.signatures:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f'Serving signature key "{name}" not found.')
  signature = servable.signature_defs[name]
  sent, expected = set(request.inputs), set(signature.inputs)
  if sent != expected:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"input size does not match signature: {len(sent)}!={len(expected)} for "
                       f"inputs of signature {name!r}. Sent extra: {sorted(sent - expected)}. "
                       f"Missing but required: {sorted(expected - sent)}.")
  inputs = {key: _checked_input(key, request.inputs[key], signature.inputs[key], max_batch_size)
            for key in sent}
  unknown = set(request.output_filter) - set(signature.outputs)
  if unknown:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"output tensor alias not found in signature: {sorted(unknown)}")
  try:
    outputs = servable.loaded.signatures[name](**inputs)
  except tf.errors.OpError as e:
    raise RequestError(GRPC_CODES.get(e.error_code, grpc.StatusCode.INTERNAL), e.message) from e
  response = predict_pb2.PredictResponse()
  response.model_spec.version.value = servable.version
  response.model_spec.signature_name = name
  for key in request.output_filter or outputs:
    response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
  return response


def _checked_input(key: str, proto, info: meta_graph_pb2.TensorInfo, max_batch_size: int):
  if proto.dtype != info.dtype:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"input {key!r} must be {tf.dtypes.as_dtype(info.dtype).name}, "
                       f"not {_dtype_name(proto.dtype)}")
  try:
    value = tf.make_ndarray(proto)
  except (ValueError, TypeError) as e:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {key!r} is malformed: {e}") from e
  if not info.tensor_shape.unknown_rank and value.ndim != len(info.tensor_shape.dim):
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"input {key!r} must have rank {len(info.tensor_shape.dim)}, "
                       f"not {value.ndim} (shape {list(value.shape)})")
  if max_batch_size and value.ndim and value.shape[0] > max_batch_size:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"batch of {value.shape[0]} is larger than the maximum {max_batch_size}")
  return tf.constant(value)


def _dtype_name(enum: int) -> str:
  try:
    return tf.dtypes.as_dtype(enum).name
  except TypeError:
    return f"dtype {enum}"


class ModelManager:
  """The served version of one model; `poll` loads a newer version (and warms it up) and swaps it
  in, so requests never wait for a load."""

  def __init__(self, name: str, base_path: str, max_batch_size: int):
    self.name = name
    self.base_path = base_path
    self.max_batch_size = max_batch_size
    self.current: Optional[Servable] = None
    self.ended = []  # versions served before, reported as END
    self._failed = set()

  def poll(self):
    complete = [v for v in saved_model.versions(self.base_path)
                if os.path.exists(os.path.join(self.base_path, str(v), "saved_model.pb"))]
    newest = max(set(complete) - self._failed, default=None)
    if newest is None or (self.current and newest <= self.current.version):
      return
    logging.info("Loading %s version %d.", self.name, newest)
    try:
      servable = load_servable(self.base_path, newest)
      count = 0
      for request in warmup.read(os.path.join(self.base_path, str(newest))):
        predict(servable, request)
        count += 1
    except Exception as e:  # pylint: disable=broad-except  (a bad version must not stop serving)
      logging.error("Cannot load %s version %d (still serving %s): %s", self.name, newest,
                    self.current.version if self.current else "nothing", e)
      self._failed.add(newest)
      return
    if self.current:
      self.ended.append(self.current.version)
    self.current = servable  # one reference assignment: requests see the old or the new version
    logging.info("Serving %s version %d (%d warmup requests run).", self.name, newest, count)

  def poll_forever(self, seconds: float, stop: threading.Event):
    while not stop.wait(seconds):
      self.poll()

  def servable(self, spec) -> Servable:
    """The servable a request's ModelSpec asks for, or NOT_FOUND as TF Serving answers."""
    current = self.current
    if spec.name != self.name:
      raise RequestError(grpc.StatusCode.NOT_FOUND,
                         f"Servable not found for request: Latest({spec.name})")
    if current is None:
      raise RequestError(grpc.StatusCode.NOT_FOUND, f"No version of {self.name} loaded yet")
    if spec.HasField("version") and spec.version.value != current.version:
      raise RequestError(grpc.StatusCode.NOT_FOUND,
                         f"Servable not found for request: Specific({spec.name}, {spec.version.value})")
    if spec.version_label:
      raise RequestError(grpc.StatusCode.NOT_FOUND,
                         f"Servable not found for request: Label({spec.name}, {spec.version_label})")
    return current


def _answer(method: str, context, handler):
  """Runs handler(); a RequestError becomes the gRPC status (logged), the server carries on."""
  try:
    return handler()
  except RequestError as e:
    logging.warning("%s → %s: %s", method, e.code.name, e)
    context.abort(e.code, str(e))


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict and GetModelMetadata; the base class answers the rest with UNIMPLEMENTED."""

  def __init__(self, manager: ModelManager):
    self.manager = manager

  def Predict(self, request, context):
    def handle():
      response = predict(self.manager.servable(request.model_spec), request,
                         self.manager.max_batch_size)
      response.model_spec.name = self.manager.name
      return response
    return _answer("Predict", context, handle)

  def GetModelMetadata(self, request, context):
    def handle():
      servable = self.manager.servable(request.model_spec)
      if list(request.metadata_field) != ["signature_def"]:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Metadata field(s) {list(request.metadata_field)} not supported; "
                           "ask for [\"signature_def\"].")
      response = get_model_metadata_pb2.GetModelMetadataResponse()
      response.model_spec.name = self.manager.name
      response.model_spec.version.value = servable.version
      response.metadata["signature_def"].Pack(
          get_model_metadata_pb2.SignatureDefMap(signature_def=servable.signature_defs))
      return response
    return _answer("GetModelMetadata", context, handle)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus; HandleReloadConfigRequest is UNIMPLEMENTED (one model, found by polling)."""

  def __init__(self, manager: ModelManager):
    self.manager = manager

  def GetModelStatus(self, request, context):
    def handle():
      spec, manager = request.model_spec, self.manager
      if spec.name != manager.name:
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"Could not find any versions of model {spec.name}")
      states = {v: get_model_status_pb2.ModelVersionStatus.END for v in manager.ended}
      current = manager.current
      if current:
        states[current.version] = get_model_status_pb2.ModelVersionStatus.AVAILABLE
      if spec.HasField("version"):
        if spec.version.value not in states:
          raise RequestError(grpc.StatusCode.NOT_FOUND,
                             f"Could not find version {spec.version.value} of model {spec.name}")
        states = {spec.version.value: states[spec.version.value]}
      return get_model_status_pb2.GetModelStatusResponse(model_version_status=[
          get_model_status_pb2.ModelVersionStatus(version=v, state=s, status=status_pb2.StatusProto())
          for v, s in sorted(states.items(), reverse=True)])
    return _answer("GetModelStatus", context, handle)


def serve(manager: ModelManager, port: int, threads: int) -> grpc.Server:
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads),
                       options=client.MESSAGE_OPTIONS)
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
  if not server.add_insecure_port(f"0.0.0.0:{port}"):
    experiment.fail(f"Cannot listen on port {port}.")
  server.start()
  return server


def define_flags():
  flags.DEFINE_integer("port", 8500, "gRPC port (TF Serving's default is 8500).")
  flags.DEFINE_string("model_name", None, "Name clients ask for (ModelSpec.name).")
  flags.DEFINE_string("model_base_path", None, "Directory of integer version directories, "
                      "EXPORT_BASE/MODEL_NAME as written by export.saved_model.")
  flags.DEFINE_float("poll_seconds", 1.0, "How often to look for a new version.")
  flags.DEFINE_integer("max_batch_size", 0, "Largest batch accepted per request (0: no limit).")
  flags.DEFINE_integer("threads", 4, "Requests handled at the same time.")
  flags.mark_flag_as_required("model_name")
  flags.mark_flag_as_required("model_base_path")
  flags.register_validator("poll_seconds", lambda v: v > 0, message="--poll_seconds must be > 0.")
  flags.register_validator("threads", lambda v: v >= 1, message="--threads must be at least 1.")
  flags.register_validator("max_batch_size", lambda v: v >= 0,
                           message="--max_batch_size must be 0 (no limit) or positive.")


def main(argv):
  del argv
  if not os.path.isdir(FLAGS.model_base_path):
    experiment.fail(f"--model_base_path {FLAGS.model_base_path} is not a directory.")
  manager = ModelManager(FLAGS.model_name, FLAGS.model_base_path, FLAGS.max_batch_size)
  manager.poll()
  if manager.current is None:
    logging.warning("No version under %s yet; waiting for one.", FLAGS.model_base_path)
  server = serve(manager, FLAGS.port, FLAGS.threads)
  stop = threading.Event()
  threading.Thread(target=manager.poll_forever, args=(FLAGS.poll_seconds, stop), daemon=True).start()
  logging.info("Listening for %s on port %d.", FLAGS.model_name, FLAGS.port)
  try:
    server.wait_for_termination()
  except KeyboardInterrupt:
    stop.set()
    server.stop(grace=1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
