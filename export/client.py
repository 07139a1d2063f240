"""Cluster image files with a served model over gRPC (TensorFlow Serving or export.server).

  python -m export.client --server=localhost:8500 --model_name=mnist a.png b.jpg ...

prints `file,cluster,confidence,fit` (confidence = the largest cluster probability; fit as in
assignments.csv). Files the model cannot read are named on standard error, the others clustered. The functions are also what tests
and benchmarks use to talk to a server.
"""
import csv
import io
import os
import sys
import time
from typing import Dict, List, Sequence, Tuple

from absl import app
from absl import flags
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from export import signatures
from vaeclust.lib import command
from vaeclust.lib import files

FLAGS = flags.FLAGS
# Batches of large images exceed gRPC's default 4 MB message limit; both ends lift it.
MESSAGE_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


class Client:
  """Stubs of both services on one channel; every call retries UNAVAILABLE with backoff."""

  def __init__(self, server: str, model_name: str, timeout: float = 10.0, attempts: int = 5,
               root_certificates: bytes = None):
    """root_certificates (PEM) connect with TLS, trusting them."""
    self.server = server
    if root_certificates:
      self.channel = grpc.secure_channel(
          server, grpc.ssl_channel_credentials(root_certificates), options=MESSAGE_OPTIONS)
    else:
      self.channel = grpc.insecure_channel(server, options=MESSAGE_OPTIONS)
    self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
    self.model_name = model_name
    self.timeout = timeout
    self.attempts = attempts

  def call(self, method, request):
    delay = 0.2
    for attempt in range(self.attempts):
      try:
        return method(request, timeout=self.timeout)
      except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.attempts - 1:
          raise
        time.sleep(delay)
        delay *= 2

  def predict(self, inputs: Dict[str, object], signature: str = signatures.DEFAULT,
              version: int = None) -> predict_pb2.PredictResponse:
    """One Predict call; inputs are arrays (or lists of bytes) by input name."""
    request = predict_pb2.PredictRequest(model_spec=self.spec(signature, version))
    for name, value in inputs.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return self.call(self.predictions.Predict, request)

  def predict_images(self, images: np.ndarray) -> Dict[str, np.ndarray]:
    """uint8 [B, H, W, C] → cluster, probabilities and embedding arrays (serving_default)."""
    response = self.predict({signatures.IMAGES: np.asarray(images, np.uint8)})
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

  def signature_defs(self):
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=self.spec(), metadata_field=["signature_def"])
    response = self.call(self.predictions.GetModelMetadata, request)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    return signature_map.signature_def

  def status(self) -> Dict[int, str]:
    """Version → state name (AVAILABLE, END, ...) as the server reports them."""
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=self.spec())
    response = self.call(self.models.GetModelStatus, request)
    return {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state)
            for s in response.model_version_status}

  def wait_until_available(self, version: int = None, timeout: float = 120.0) -> int:
    """Waits for `version` (or any version) to be AVAILABLE; returns the available version."""
    deadline = time.time() + timeout
    while True:
      try:
        available = [v for v, state in self.status().items() if state == "AVAILABLE"]
        if available and version in (None, available[0]):
          return available[0]
      except grpc.RpcError as e:
        if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
          raise
      if time.time() > deadline:
        raise TimeoutError(f"{self.model_name} version {version or 'any'} not available "
                           f"after {timeout:.0f} s")
      time.sleep(0.2)

  def spec(self, signature: str = "", version: int = None) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=self.model_name, signature_name=signature)
    if version is not None:
      spec.version.value = version
    return spec

  def close(self):
    self.channel.close()


def cluster_files(client: Client, paths: Sequence[str], signature: str,
                  batch_size: int) -> Tuple[List[tuple], List[tuple]]:
  """((path, cluster, confidence, fit) rows, (path, message) of files the server cannot read), sending
  encoded bytes to a one-string-input signature in batches; the input's name comes from the
  server's signature metadata. A batch refused as INVALID_ARGUMENT is sent again file by file, so
  one unreadable file does not cost the others their clusters."""
  defs = client.signature_defs()
  if signature not in defs:
    raise ValueError(f"{client.model_name} has no signature {signature!r}; it has "
                     f"{', '.join(k for k in sorted(defs) if not k.startswith('__'))}.")
  inputs = defs[signature].inputs
  if len(inputs) != 1 or next(iter(inputs.values())).dtype != tf.string.as_datatype_enum:
    raise ValueError(f"Signature {signature!r} does not take one tensor of encoded images.")
  input_name = next(iter(inputs))

  def cluster(batch):
    encoded = []
    for path in batch:
      with open(path, "rb") as f:
        encoded.append(f.read())
    outputs = client.predict({input_name: encoded}, signature).outputs
    clusters = tf.make_ndarray(outputs["cluster"])
    confidence = tf.make_ndarray(outputs["probabilities"]).max(axis=-1)
    fit = tf.make_ndarray(outputs["fit"])
    return list(zip(batch, clusters.tolist(), confidence.tolist(), fit.tolist()))

  rows, unreadable = [], []

  def send(batch):
    try:
      rows.extend(cluster(batch))
    except grpc.RpcError as e:
      if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
        raise
      if len(batch) == 1:
        unreadable.append((batch[0], e.details()))
      else:
        for path in batch:
          send([path])

  for start in range(0, len(paths), batch_size):
    send(paths[start:start + batch_size])
  return rows, unreadable


def to_csv(rows) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["file", "cluster", "confidence", "fit"])
  writer.writerows((path, cluster, f"{confidence:.6f}", f"{fit:.6f}")
                   for path, cluster, confidence, fit in rows)
  return out.getvalue()


def define_flags(flag_values: flags.FlagValues = FLAGS):
  """The command's flags, in absl's FLAGS or (a test, say) a FlagValues of their own."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string("server", "localhost:8500", "host:port of the gRPC endpoint.", **define)
  flags.DEFINE_string("ssl_root_cert", None, "PEM certificate(s) to trust; connects with TLS "
                      "(a server started with --ssl_cert_file). Without it, plaintext gRPC.",
                      **define)
  flags.DEFINE_string("model_name", None, "Served model name.", **define)
  flags.DEFINE_string("signature", signatures.ENCODED, "Signature taking encoded image bytes.",
                      **define)
  flags.DEFINE_float("timeout", 10.0, "Seconds per request.", **define)
  flags.DEFINE_integer("batch_size", 64, "Images per request.", **define)
  flags.DEFINE_string("output", None, "CSV file to write (default: standard output).", **define)
  flags.mark_flag_as_required("model_name", flag_values)
  flags.register_validator("batch_size", lambda v: v >= 1,
                           message="--batch_size must be at least 1.", **define)


def main(argv):
  paths = argv[1:]
  if not paths:
    command.fail("Give the image files to cluster after the flags.")
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    command.fail(f"No such file(s): {', '.join(missing)}.")
  root_certificates = None
  if FLAGS.ssl_root_cert:
    try:
      with open(FLAGS.ssl_root_cert, "rb") as f:
        root_certificates = f.read()
    except OSError as e:
      command.fail(f"Cannot read --ssl_root_cert: {e}.")
  client = Client(FLAGS.server, FLAGS.model_name, FLAGS.timeout, root_certificates=root_certificates)
  try:
    rows, unreadable = cluster_files(client, paths, FLAGS.signature, FLAGS.batch_size)
  except grpc.RpcError as e:
    command.fail(f"{FLAGS.server} answered {e.code().name}: {e.details()}")
  except (ValueError, OSError) as e:
    command.fail(str(e))
  finally:
    client.close()
  if FLAGS.output:
    files.write_atomically(FLAGS.output, to_csv(rows))
  else:
    sys.stdout.write(to_csv(rows))
  for path, message in unreadable:
    sys.stderr.write(f"{path}: not clustered: {message}\n")
  if unreadable:
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
