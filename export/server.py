"""A small gRPC server with TensorFlow Serving's PredictionService and ModelService, for machines
without TensorFlow Serving (development, tests). Production uses TensorFlow Serving itself
(docker `tensorflow/serving`); clients talk to both with the same gRPC calls.

  python -m export.server --port=8500 --model_name=mnist --model_base_path=/models/mnist

Serves the highest integer version under the base path, runs its warmup requests when it loads,
and switches to a newer version when one appears (a background thread polls the base path).
Requests are bounded (bytes, batch size, pixels) and checked before anything is allocated for
them, so that a small request cannot make the server allocate gigabytes.
"""
from concurrent import futures
import dataclasses
import io
import math
import os
import re
import threading
from typing import Dict, Optional

from absl import app
from absl import flags
from absl import logging
import grpc
from PIL import Image
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import status_pb2

from export import saved_model
from export import signatures
from export import warmup
from vaeclust.lib import command

FLAGS = flags.FLAGS
# TensorFlow's error codes are gRPC's.
GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}
# Where a TensorProto without tensor_content keeps its values, by dtype (complex: 2 per element).
VALUE_FIELDS = {
    **dict.fromkeys([tf.int8, tf.int16, tf.int32, tf.uint8, tf.uint16], "int_val"),
    tf.int64: "int64_val", tf.uint32: "uint32_val", tf.uint64: "uint64_val",
    tf.float16: "half_val", tf.bfloat16: "half_val", tf.float32: "float_val",
    tf.float64: "double_val", tf.complex64: "scomplex_val", tf.complex128: "dcomplex_val",
    tf.bool: "bool_val", tf.string: "string_val"}
ENCODED_FORMATS = ("PNG", "JPEG", "BMP", "GIF")  # what tf.io.decode_image reads in the signature
INTERNAL_MESSAGE = "Internal error; the server log has the details."


class RequestError(Exception):
  """A request the server refuses; answered with `code` and the message, as TF Serving would."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-request bounds (0: none); with the message size limit they bound a request's memory."""
  max_batch_size: int = 0
  max_pixels_per_image: int = 0
  max_pixels_per_request: int = 0


@dataclasses.dataclass(frozen=True)
class Servable:
  """One loaded version: the SavedModel's functions and its SignatureDefs (for checks/metadata)."""
  version: int
  loaded: object
  signature_defs: Dict[str, meta_graph_pb2.SignatureDef]


def directory_signature(path: str) -> tuple:
  """(file, size, mtime) of every file under path (tf.io.gfile: local or e.g. gs://); changes
  while a copy is in progress."""
  entries = []
  for root, _, names in tf.io.gfile.walk(path):
    for name in names:
      try:
        stat = tf.io.gfile.stat(os.path.join(root, name))
      except tf.errors.NotFoundError:  # removed while we looked
        continue
      entries.append((os.path.relpath(os.path.join(root, name), path), stat.length,
                      stat.mtime_nsec))
  return tuple(sorted(entries))


def load_servable(model_base_path: str, version: int) -> Servable:
  path = os.path.join(model_base_path, str(version))
  with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
    proto = saved_model_pb2.SavedModel.FromString(f.read())
  serve = next(m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags)
  return Servable(version, tf.saved_model.load(path), dict(serve.signature_def))


def predict(servable: Servable, request: predict_pb2.PredictRequest,
            limits: Limits = Limits()) -> predict_pb2.PredictResponse:
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
  inputs = {key: _checked_input(key, request.inputs[key], signature.inputs[key], limits)
            for key in sent}
  unknown = set(request.output_filter) - set(signature.outputs)
  if unknown:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"output tensor alias not found in signature: {sorted(unknown)}")
  try:
    outputs = servable.loaded.signatures[name](**inputs)
  except tf.errors.InvalidArgumentError as e:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       _undecodable(inputs) or _op_message(e)) from e
  except tf.errors.OpError as e:
    raise RequestError(GRPC_CODES.get(e.error_code, grpc.StatusCode.INTERNAL), _op_message(e)) from e
  response = predict_pb2.PredictResponse()
  response.model_spec.version.value = servable.version
  response.model_spec.signature_name = name
  for key in request.output_filter or outputs:
    response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
  return response


def _checked_input(key: str, proto, info: meta_graph_pb2.TensorInfo, limits: Limits):
  """The input as a tensor, after every check that the declared shape alone allows: a proto's
  shape costs nothing to send, tf.make_ndarray allocates it (filling missing values)."""
  if proto.dtype != info.dtype:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"input {key!r} must be {tf.dtypes.as_dtype(info.dtype).name}, "
                       f"not {_dtype_name(proto.dtype)}")
  shape = [d.size for d in proto.tensor_shape.dim]
  if proto.tensor_shape.unknown_rank or any(d < 0 for d in shape):
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {key!r} has no complete shape")
  if not info.tensor_shape.unknown_rank and len(shape) != len(info.tensor_shape.dim):
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"input {key!r} must have rank {len(info.tensor_shape.dim)}, "
                       f"not {len(shape)} (shape {shape})")
  declared, carried = math.prod(shape), _value_count(proto)
  if declared != carried:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"input {key!r} declares shape {shape} ({declared} values) but carries "
                       f"{carried:.10g} values")
  if limits.max_batch_size and shape and shape[0] > limits.max_batch_size:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"batch of {shape[0]} is larger than the maximum {limits.max_batch_size}")
  if len(shape) == 4:  # [batch, height, width, channels]
    _check_pixels(key, shape[1] * shape[2], math.prod(shape[:3]), limits)
  try:
    value = tf.make_ndarray(proto)
  except (ValueError, TypeError) as e:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {key!r} is malformed: {e}") from e
  if key == signatures.IMAGE_BYTES:
    pixels = [_encoded_pixels(f"{key}[{i}]", data, limits) for i, data in enumerate(value.flat)]
    _check_pixels(key, 0, sum(pixels), limits)
  return tf.constant(value)


def _value_count(proto) -> float:
  """Elements a TensorProto carries (fractional if tensor_content is not whole elements)."""
  dtype = tf.dtypes.as_dtype(proto.dtype)
  if proto.tensor_content and dtype != tf.string:
    return len(proto.tensor_content) / dtype.size
  return len(getattr(proto, VALUE_FIELDS[dtype])) / (2 if dtype.is_complex else 1)


def _check_pixels(what: str, per_image: int, in_all: int, limits: Limits):
  """Pixel counts against the limits: decoding and resizing cost memory by the pixel."""
  if limits.max_pixels_per_image and per_image > limits.max_pixels_per_image:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"{what} has {per_image} pixels per image, more than the maximum "
                       f"{limits.max_pixels_per_image}")
  if limits.max_pixels_per_request and in_all > limits.max_pixels_per_request:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"{what} has {in_all} pixels in all, more than the maximum "
                       f"{limits.max_pixels_per_request} per request")


def _encoded_pixels(what: str, data: bytes, limits: Limits) -> int:
  """Width × height from the file's header, checked (PIL's open reads the header, no pixels)."""
  try:
    with Image.open(io.BytesIO(data), formats=ENCODED_FORMATS) as image:
      width, height = image.size
  except Image.DecompressionBombError as e:  # PIL's own limit, far above ours by default
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {e}") from e
  except Exception as e:  # pylint: disable=broad-except  (PIL raises many types on bad headers)
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"{what} is not a {'/'.join(ENCODED_FORMATS)} image") from e
  _check_pixels(what, width * height, width * height, limits)
  return width * height


def _undecodable(inputs) -> Optional[str]:
  """Which encoded image the model could not decode (its header was readable), if any: the
  graph's error names a node, not the batch element."""
  if signatures.IMAGE_BYTES not in inputs:
    return None
  for i, data in enumerate(inputs[signatures.IMAGE_BYTES]):
    try:
      tf.io.decode_image(data, expand_animations=False)
    except tf.errors.InvalidArgumentError as e:
      return f"{signatures.IMAGE_BYTES}[{i}] cannot be decoded: {_op_message(e)}"
  return None


def _op_message(error: tf.errors.OpError) -> str:
  """The error's own message, without the graph node and Python stack TensorFlow adds."""
  message = error.message.split("\n\t [[", 1)[0].rsplit("\n\n", 1)[-1].strip()
  return re.sub(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\]$", "", message)


def _dtype_name(enum: int) -> str:
  try:
    return tf.dtypes.as_dtype(enum).name
  except TypeError:
    return f"dtype {enum}"


class ModelManager:
  """The served version of one model; `poll` loads a newer version (and warms it up) and swaps it
  in, so requests never wait for a load."""

  def __init__(self, name: str, base_path: str, limits: Limits = Limits()):
    self.name = name
    self.base_path = base_path
    self.limits = limits
    self.current: Optional[Servable] = None
    self.ended = []  # versions served before, reported as END
    # version → its directory's signature when it failed to load: a version copied in by hand
    # (saved_model.pb before variables/) fails until the copy completes, and is retried once its
    # directory has changed.
    self._failed = {}

  def poll(self):
    served = self.current.version if self.current else 0
    candidates = {v: directory_signature(os.path.join(self.base_path, str(v)))
                  for v in saved_model.versions(self.base_path) if v > served and
                  tf.io.gfile.exists(os.path.join(self.base_path, str(v), "saved_model.pb"))}
    newest = max((v for v, signature in candidates.items() if self._failed.get(v) != signature),
                 default=None)
    if newest is None:
      return
    logging.info("Loading %s version %d%s.", self.name, newest,
                 " (changed since it failed)" if newest in self._failed else "")
    try:
      servable = load_servable(self.base_path, newest)
      count = 0
      for request in warmup.read(os.path.join(self.base_path, str(newest))):
        predict(servable, request)
        count += 1
    except Exception as e:  # pylint: disable=broad-except  (a bad version must not stop serving)
      logging.error("Cannot load %s version %d (still serving %s): %s. Tried again when its "
                    "directory changes.", self.name, newest,
                    self.current.version if self.current else "nothing", e)
      self._failed[newest] = candidates[newest]
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
  except Exception:  # pylint: disable=broad-except  (clients get no internals; the log has them)
    logging.exception("%s → INTERNAL", method)
    context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict and GetModelMetadata; the base class answers the rest with UNIMPLEMENTED."""

  def __init__(self, manager: ModelManager):
    self.manager = manager

  def Predict(self, request, context):
    def handle():
      response = predict(self.manager.servable(request.model_spec), request, self.manager.limits)
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


def serve(manager: ModelManager, port: int, threads: int, host: str = "127.0.0.1",
          max_request_bytes: int = -1, credentials: grpc.ServerCredentials = None) -> grpc.Server:
  """Starts the services on host:port, with TLS when credentials are given."""
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads),
                       options=[("grpc.max_receive_message_length", max_request_bytes),
                                ("grpc.max_send_message_length", -1)])
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
  address = f"{host}:{port}"
  try:
    bound = (server.add_secure_port(address, credentials) if credentials
             else server.add_insecure_port(address))
  except RuntimeError:  # grpc raises instead of returning 0 for some addresses
    bound = 0
  if not bound:
    command.fail(f"Cannot listen on {address}.")
  server.start()
  return server


def server_credentials(cert_file: str, key_file: str) -> grpc.ServerCredentials:
  with open(key_file, "rb") as key, open(cert_file, "rb") as cert:
    return grpc.ssl_server_credentials([(key.read(), cert.read())])


def define_flags():
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on. The default accepts only this "
                      "machine; 0.0.0.0 (or [::]) accepts every interface, which exposes the "
                      "model to the network (use TLS there).")
  flags.DEFINE_integer("port", 8500, "gRPC port (TF Serving's default is 8500).")
  flags.DEFINE_string("ssl_cert_file", None, "PEM certificate (chain) to serve TLS with; needs "
                      "--ssl_key_file. Without both, the server speaks plaintext gRPC.")
  flags.DEFINE_string("ssl_key_file", None, "PEM private key of --ssl_cert_file.")
  flags.DEFINE_string("model_name", None, "Name clients ask for (ModelSpec.name).")
  flags.DEFINE_string("model_base_path", None, "Directory of integer version directories, "
                      "EXPORT_BASE/MODEL_NAME as written by export.saved_model.")
  flags.DEFINE_float("poll_seconds", 1.0, "How often to look for a new version.")
  flags.DEFINE_integer("max_request_bytes", 64 << 20, "Largest request message accepted (larger "
                       "ones are answered RESOURCE_EXHAUSTED before they are read).")
  flags.DEFINE_integer("max_batch_size", 256, "Largest batch accepted per request (0: no limit).")
  flags.DEFINE_integer("max_pixels_per_image", 2048 * 2048, "Largest image accepted, in pixels "
                       "(height × width; encoded images by their header, before decoding; 0: no "
                       "limit).")
  flags.DEFINE_integer("max_pixels_per_request", 4096 * 4096, "Most pixels accepted in one "
                       "request, all images together (0: no limit). Preprocessing takes about 25 "
                       "bytes per pixel, so --threads × this bounds the requests' memory.")
  flags.DEFINE_integer("threads", 4, "Requests handled at the same time.")
  flags.mark_flag_as_required("model_name")
  flags.mark_flag_as_required("model_base_path")
  flags.register_validator("poll_seconds", lambda v: v > 0, message="--poll_seconds must be > 0.")
  flags.register_validator("threads", lambda v: v >= 1, message="--threads must be at least 1.")
  flags.register_validator("max_request_bytes", lambda v: v >= 1,
                           message="--max_request_bytes must be positive.")
  for name in ("max_batch_size", "max_pixels_per_image", "max_pixels_per_request"):
    flags.register_validator(name, lambda v: v >= 0,
                             message=f"--{name} must be 0 (no limit) or positive.")
  flags.register_multi_flags_validator(
      ["ssl_cert_file", "ssl_key_file"], lambda v: bool(v["ssl_cert_file"]) == bool(v["ssl_key_file"]),
      message="--ssl_cert_file and --ssl_key_file go together.")


def main(argv):
  del argv
  if not tf.io.gfile.isdir(FLAGS.model_base_path):
    command.fail(f"--model_base_path {FLAGS.model_base_path} is not a directory.")
  credentials = None
  if FLAGS.ssl_cert_file:
    try:
      credentials = server_credentials(FLAGS.ssl_cert_file, FLAGS.ssl_key_file)
    except OSError as e:
      command.fail(f"Cannot read the TLS certificate or key: {e}.")
  limits = Limits(FLAGS.max_batch_size, FLAGS.max_pixels_per_image, FLAGS.max_pixels_per_request)
  manager = ModelManager(FLAGS.model_name, FLAGS.model_base_path, limits)
  manager.poll()
  if manager.current is None:
    logging.warning("No version under %s yet; waiting for one.", FLAGS.model_base_path)
  server = serve(manager, FLAGS.port, FLAGS.threads, FLAGS.host, FLAGS.max_request_bytes,
                 credentials)
  stop = threading.Event()
  threading.Thread(target=manager.poll_forever, args=(FLAGS.poll_seconds, stop), daemon=True).start()
  logging.info("Listening for %s on %s:%d%s.", FLAGS.model_name, FLAGS.host, FLAGS.port,
               " (TLS)" if credentials else "")
  try:
    server.wait_for_termination()
  except KeyboardInterrupt:
    stop.set()
    server.stop(grace=1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
