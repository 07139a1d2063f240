"""Export and serving end to end: train a tiny model once → `python -m export.saved_model` → the
SavedModel's layout, versions and signatures → `python -m export.server` in a subprocess → the
served clusters equal the in-process model's, a new version is picked up, bad requests get TF
Serving's status codes. Plus the in-graph preprocessing on its own."""
import contextlib
import csv
import datetime
import json
import os
import shutil
import struct
import time
import zlib

import grpc
import keras
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from export import client as client_lib
from export import saved_model
from export import server as server_lib
from export import signatures
from vaeclust import model as vc_model
from vaeclust.lib import data

# The trained model, its export and the server are module fixtures: built once, in one worker.
pytestmark = pytest.mark.xdist_group("export")

MAX_BATCH = 100
MAX_REQUEST_BYTES = 1 << 20
MAX_PIXELS_PER_IMAGE = 100 * 100
MAX_PIXELS_PER_REQUEST = 50_000


def export(run, model_dir, base, *extra, check=True):
  """The export command, run by `run` (command_in_process or run_module)."""
  return run("export.saved_model", f"--model_dir={model_dir}", f"--export_base={base}",
             "--model_name=digits", *extra, check=check)


@pytest.fixture(scope="module")
def model_dir(vc_main, vc_tiny, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("train") / "run")
  vc_main(*vc_tiny, f"--model_dir={path}", "--pretrain_steps=150", "--train_steps=300",
           "--checkpoint_every=300", "--balance_weight=1", "--mode=train")
  return path


@pytest.fixture(scope="module")
def base(command_in_process, model_dir, tmp_path_factory):
  """EXPORT_BASE with version 1 of model `digits`."""
  path = str(tmp_path_factory.mktemp("models"))
  exported = export(command_in_process, model_dir, path).stdout.strip()
  assert exported == os.path.join(path, "digits", "1")
  return path


@pytest.fixture(scope="module")
def digits():
  ds, _ = data.load("digits", split="all", image_size=8)
  return np.stack([e["image"] for e in ds.take(64).as_numpy_iterator()])


@pytest.fixture(scope="module")
def reference_outputs(model_dir, digits):
  """What the trained Keras model itself, restored in this process, makes of the digits."""
  with open(os.path.join(model_dir, "run.json")) as f:
    model = vc_model.from_run(json.load(f))
  tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(model_dir)).expect_partial()
  return {name: value.numpy() for name, value in model(digits.astype(np.float32) / 255.0).items()}


@pytest.fixture(scope="module")
def reference(reference_outputs):
  """Cluster probabilities of the trained Keras model."""
  return reference_outputs["probabilities"]


@pytest.fixture(scope="module")
def reference_fit(reference_outputs):
  """The trained Keras model's fit of the same images."""
  return reference_outputs["fit"]


@contextlib.contextmanager
def running_server(start_module, port, base, log_path, *flags, root_certificates=None):
  """(Client, server process) for `python -m export.server` on `port`."""
  with open(log_path, "w") as log:
    process = start_module("export.server", f"--port={port}", "--model_name=digits",
                           f"--model_base_path={os.path.join(base, 'digits')}",
                           "--poll_seconds=0.5", *flags, stderr=log)
  client = client_lib.Client(f"localhost:{port}", "digits", timeout=30,
                             root_certificates=root_certificates)
  try:
    try:
      client.wait_until_available(timeout=120)
    except TimeoutError:
      pytest.fail(f"the server did not come up:\n{_read(log_path)[-4000:]}")
    yield client, process
  finally:
    client.close()
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(start_module, ports, base, tmp_path_factory):
  """(Client, path of the server's log, server process id), with small request limits."""
  log_path = str(tmp_path_factory.mktemp("server") / "server.log")
  with running_server(start_module, ports(1)[0], base, log_path, f"--max_batch_size={MAX_BATCH}",
                      f"--max_request_bytes={MAX_REQUEST_BYTES}",
                      f"--max_pixels_per_image={MAX_PIXELS_PER_IMAGE}",
                      f"--max_pixels_per_request={MAX_PIXELS_PER_REQUEST}") as (client, process):
    yield client, log_path, process.pid


def test_export_writes_the_tf_serving_layout_with_metadata(base):
  version_dir = os.path.join(base, "digits", "1")
  assert {"saved_model.pb", "variables", "assets.extra"} <= set(os.listdir(version_dir))
  assert os.path.exists(os.path.join(version_dir, "variables", "variables.index"))
  with open(os.path.join(version_dir, "assets.extra", "metadata.json")) as f:
    metadata = json.load(f)
  assert metadata["method"] == "variational_clustering" and metadata["dataset"] == "digits"
  assert (metadata["num_clusters"], metadata["image_size"], metadata["channels"]) == (10, 8, 1)
  assert metadata["step"] == 300 and metadata["version"] == 1
  loaded = tf.saved_model.load(version_dir)
  served = {k: v.numpy() for k, v in loaded.signatures["metadata"]().items()}
  assert served["method"] == b"variational_clustering" and served["step"] == 300
  assert served["num_clusters"] == 10 and served["version"] == 1


def test_signatures_take_raw_images_and_give_clusters(base):
  version_dir = os.path.join(base, "digits", "1")
  loaded = tf.saved_model.load(version_dir)
  assert {"serving_default", "predict_encoded", "metadata"} <= set(loaded.signatures)
  for name, (key, dtype, shape) in {"serving_default": ("images", tf.uint8, [None] * 4),
                                    "predict_encoded": ("image_bytes", tf.string, [None])}.items():
    function = loaded.signatures[name]
    spec = function.structured_input_signature[1][key]
    assert spec.dtype == dtype and spec.shape.as_list() == shape
    outputs = function.structured_outputs
    assert outputs["cluster"].dtype == tf.int64 and outputs["cluster"].shape.as_list() == [None]
    assert outputs["probabilities"].shape.as_list() == [None, 10]
    assert outputs["embedding"].shape.as_list() == [None, 8]
  with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:  # what TF Serving reads
    graph = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0]
  assert "serve" in graph.meta_info_def.tags
  for name in ("serving_default", "predict_encoded", "metadata"):
    assert graph.signature_def[name].method_name == "tensorflow/serving/predict"


def test_warmup_requests_are_prediction_logs_the_model_answers(base):
  version_dir = os.path.join(base, "digits", "1")
  loaded = tf.saved_model.load(version_dir)
  path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
  requests = [prediction_log_pb2.PredictionLog.FromString(r).predict_log.request
              for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
  assert {r.model_spec.signature_name for r in requests} == {"serving_default", "predict_encoded"}
  for request in requests:
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
    assert outputs["cluster"].shape[0] == next(iter(inputs.values())).shape[0] > 0


def test_served_uint8_clusters_equal_the_in_process_model(server, digits, reference):
  client, *_ = server
  outputs = client.predict_images(digits)
  np.testing.assert_array_equal(outputs["cluster"], reference.argmax(axis=-1))
  np.testing.assert_allclose(outputs["probabilities"], reference, atol=1e-5)
  assert len(set(reference.argmax(axis=-1).tolist())) > 1  # a model that clusters, not a constant
  # Grey images upscaled 3× and stored as RGB come back to the same pixels after the in-graph
  # area resize and grey conversion.
  bigger = np.repeat(np.repeat(np.repeat(digits, 3, axis=1), 3, axis=2), 3, axis=3)
  np.testing.assert_array_equal(client.predict_images(bigger)["cluster"], reference.argmax(axis=-1))


def test_client_command_clusters_png_files_like_the_in_process_model(run_module, server, digits, reference,
                                                                       reference_fit, tmp_path):
  client, *_ = server
  paths = []
  for i, image in enumerate(digits):
    paths.append(str(tmp_path / f"{i:02d}.png"))
    Image.fromarray(image[..., 0]).save(paths[-1])
  output = str(tmp_path / "clusters.csv")
  run_module("export.client", f"--server={client.server}",
             "--model_name=digits", "--batch_size=20", f"--output={output}", *paths)
  with open(output) as f:
    rows = list(csv.DictReader(f))
  assert [r["file"] for r in rows] == paths
  np.testing.assert_array_equal([int(r["cluster"]) for r in rows], reference.argmax(axis=-1))
  np.testing.assert_allclose([float(r["confidence"]) for r in rows], reference.max(axis=-1),
                             atol=1e-5)
  np.testing.assert_allclose([float(r["fit"]) for r in rows], reference_fit, atol=1e-4)


def test_client_command_refuses_missing_files_before_sending(command_in_process, tmp_path):
  missing = command_in_process("export.client", "--server=localhost:1", "--model_name=digits",
                               str(tmp_path / "none.png"), check=False)
  assert missing.returncode == 2 and "No such file(s)" in missing.stderr
  assert "Traceback" not in missing.stderr


def test_model_metadata_lists_the_signatures(server):
  client, *_ = server
  defs = client.signature_defs()
  assert {"serving_default", "predict_encoded", "metadata"} <= set(defs)
  assert defs["predict_encoded"].inputs["image_bytes"].dtype == tf.string.as_datatype_enum
  response = client.predict({}, signature="metadata")
  assert tf.make_ndarray(response.outputs["num_clusters"]) == 10
  assert response.model_spec.name == "digits" and response.model_spec.signature_name == "metadata"


def test_a_new_version_is_served_once_exported(server, model_dir, base, digits, reference):
  client, *_ = server
  before = client.wait_until_available()
  version_1 = os.path.join(base, "digits", "1", "saved_model.pb")
  stamp = os.stat(version_1).st_mtime_ns
  path = saved_model.export(model_dir, base, "digits")  # what the command runs (tested above)
  assert path == os.path.join(base, "digits", str(before + 1))
  assert client.wait_until_available(before + 1, timeout=60) == before + 1
  assert client.status()[before] == "END"
  response = client.predict({"images": digits})
  assert response.model_spec.version.value == before + 1
  np.testing.assert_array_equal(tf.make_ndarray(response.outputs["cluster"]),
                                reference.argmax(axis=-1))
  with pytest.raises(saved_model.ExportError, match="never overwritten"):
    saved_model.export(model_dir, base, "digits", version=1)
  assert os.stat(version_1).st_mtime_ns == stamp
  assert sorted(os.listdir(os.path.join(base, "digits"))) == ["1", str(before + 1)]  # no temp dirs


def test_a_broken_version_is_logged_and_the_served_one_stays(server, base, digits):
  client, log_path, _ = server
  served = client.wait_until_available()
  broken = os.path.join(base, "digits", str(served + 1))
  os.makedirs(broken)
  with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
    f.write(b"not a SavedModel")
  message = f"Cannot load digits version {served + 1} (still serving {served})"
  deadline = time.time() + 30
  while message not in _read(log_path):
    assert time.time() < deadline, "the server did not try the new version"
    time.sleep(0.2)
  assert client.status()[served] == "AVAILABLE"
  assert client.predict({"images": digits}).model_spec.version.value == served


def test_bad_requests_get_tf_serving_codes_and_the_server_carries_on(server, digits, tmp_path):
  client, log_path, _ = server
  other = client_lib.Client(client.server, "no_such_model")
  cases = [
      (lambda: other.predict({"images": digits}), grpc.StatusCode.NOT_FOUND, "no_such_model"),
      (lambda: client.predict({"images": digits}, version=99), grpc.StatusCode.NOT_FOUND, "99"),
      (lambda: client.predict({"images": digits}, signature="nope"),
       grpc.StatusCode.INVALID_ARGUMENT, 'Serving signature key "nope" not found'),
      (lambda: client.predict({"pixels": digits}), grpc.StatusCode.INVALID_ARGUMENT, "pixels"),
      (lambda: client.predict({"images": digits.astype(np.float32)}),
       grpc.StatusCode.INVALID_ARGUMENT, "must be uint8"),
      (lambda: client.predict({"images": digits[0]}), grpc.StatusCode.INVALID_ARGUMENT, "rank 4"),
      (lambda: client.predict({"images": np.zeros((2, 8, 8, 5), np.uint8)}),
       grpc.StatusCode.INVALID_ARGUMENT, "1, 2, 3 or 4 channels"),
      (lambda: client.predict({"image_bytes": [b"not an image"]}, signature="predict_encoded"),
       grpc.StatusCode.INVALID_ARGUMENT, "image"),
      (lambda: client.predict({"images": np.zeros((MAX_BATCH + 1, 8, 8, 1), np.uint8)}),
       grpc.StatusCode.INVALID_ARGUMENT, f"maximum {MAX_BATCH}"),
      (lambda: client.call(client.predictions.Classify,
                           classification_pb2.ClassificationRequest(model_spec=client.spec())),
       grpc.StatusCode.UNIMPLEMENTED, ""),
      (other.status, grpc.StatusCode.NOT_FOUND, "no_such_model"),
  ]
  for call, code, text in cases:
    with pytest.raises(grpc.RpcError) as error:
      call()
    assert (error.value.code(), text in error.value.details()) == (code, True), error.value.details()
  other.close()
  assert client.predict_images(digits[:3])["cluster"].shape == (3,)
  log = _read(log_path)
  assert log.count("Predict → INVALID_ARGUMENT") >= 6 and "Predict → NOT_FOUND" in log


def _empty_tensor(dtype, shape) -> tensor_pb2.TensorProto:
  """A tensor that declares a shape and carries no values: a few bytes on the wire."""
  return tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum,
                                tensor_shape=tf.TensorShape(shape).as_proto())


def _png_header(width, height) -> bytes:
  """A PNG whose header claims width × height grey pixels, with (almost) no pixel data."""
  def chunk(kind, payload):
    return (struct.pack(">I", len(payload)) + kind + payload +
            struct.pack(">I", zlib.crc32(kind + payload)))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def _peak_rss_bytes(pid) -> int:
  with open(f"/proc/{pid}/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def test_requests_that_would_be_huge_are_refused_before_allocating(server, digits):
  client, log_path, pid = server

  def request(name, proto, signature=""):
    return client.call(client.predictions.Predict, predict_pb2.PredictRequest(
        model_spec=client.spec(signature), inputs={name: proto}))

  cases = [
      # 6.4 GB of pixels, 20000² per image and 200000 images declared; a few bytes sent.
      (lambda: request("images", _empty_tensor(tf.uint8, [1, 20000, 20000, 4])),
       grpc.StatusCode.INVALID_ARGUMENT, "but carries 0 values"),
      (lambda: request("images", _empty_tensor(tf.uint8, [200000, 28, 28, 1])),
       grpc.StatusCode.INVALID_ARGUMENT, "but carries 0 values"),
      (lambda: request("image_bytes", _empty_tensor(tf.string, [50_000_000]), "predict_encoded"),
       grpc.StatusCode.INVALID_ARGUMENT, "but carries 0 values"),
      (lambda: client.predict({"image_bytes": [_png_header(60000, 60000)]}, "predict_encoded"),
       grpc.StatusCode.INVALID_ARGUMENT, "pixels"),
      (lambda: client.predict({"image_bytes": [_png_header(101, 100)]}, "predict_encoded"),
       grpc.StatusCode.INVALID_ARGUMENT, f"maximum {MAX_PIXELS_PER_IMAGE}"),
      (lambda: client.predict({"images": np.zeros((1, 101, 100, 1), np.uint8)}),
       grpc.StatusCode.INVALID_ARGUMENT, f"maximum {MAX_PIXELS_PER_IMAGE}"),
      (lambda: client.predict({"images": np.zeros((6, 100, 100, 1), np.uint8)}),
       grpc.StatusCode.INVALID_ARGUMENT, f"maximum {MAX_PIXELS_PER_REQUEST} per request"),
      (lambda: client.predict({"images": np.zeros((MAX_REQUEST_BYTES + 1, 1, 1, 1), np.uint8)}),
       grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
  ]
  for call, code, text in cases:
    started = time.time()
    with pytest.raises(grpc.RpcError) as error:
      call()
    assert (error.value.code(), text in error.value.details()) == (code, True), error.value.details()
    assert time.time() - started < 10
  assert _peak_rss_bytes(pid) < 2 << 30
  assert client.predict_images(digits[:3])["cluster"].shape == (3,)
  assert _read(log_path).count("but carries 0 values") == 3


def test_each_undecodable_image_is_named_without_graph_internals(server, digits):
  client, *_ = server
  png = [tf.io.encode_png(image).numpy() for image in digits[:3]]
  for images, text in (
      ([*png, b"some notes"], "image_bytes[3] is not a PNG/JPEG/BMP/GIF image"),
      ([png[0], png[1][:-20], png[2]], "image_bytes[1] cannot be decoded: Invalid PNG data")):
    with pytest.raises(grpc.RpcError) as error:
      client.predict({"image_bytes": images}, "predict_encoded")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert text in error.value.details() and "node" not in error.value.details()


def test_client_command_names_unreadable_files_and_clusters_the_rest(command_in_process, server,
                                                                      digits, reference, tmp_path):
  client, *_ = server
  paths = []
  for i, image in enumerate(digits[:5]):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(image[..., 0]).save(paths[-1])
  notes = tmp_path / "notes.txt"
  notes.write_text("not an image")
  paths.insert(2, str(notes))
  result = command_in_process("export.client", f"--server={client.server}", "--model_name=digits",
                              *paths, check=False)
  assert result.returncode == 1, result.stderr
  rows = list(csv.DictReader(result.stdout.splitlines()))
  assert [r["file"] for r in rows] == paths[:2] + paths[3:]
  np.testing.assert_array_equal([int(r["cluster"]) for r in rows], reference[:5].argmax(axis=-1))
  assert f"{notes}: not clustered: image_bytes[0] is not a PNG/JPEG/BMP/GIF image" in result.stderr


def test_a_version_copied_in_by_hand_is_served_once_complete(server, base, digits):
  client, log_path, _ = server
  served = client.wait_until_available()
  source = os.path.join(base, "digits", str(served))
  target = os.path.join(base, "digits", str(max(saved_model.versions(os.path.dirname(source))) + 1))
  os.makedirs(target)  # as cp -r copies: saved_model.pb first, variables/ later
  shutil.copy2(os.path.join(source, "saved_model.pb"), target)
  message = f"Cannot load digits version {os.path.basename(target)} (still serving {served}"
  deadline = time.time() + 30
  while message not in _read(log_path):
    assert time.time() < deadline, "the server did not try the half-copied version"
    time.sleep(0.2)
  time.sleep(1.5)  # a few polls: the unchanged directory is not tried again
  assert _read(log_path).count(message) == 1
  assert client.status()[served] == "AVAILABLE"
  assert client.predict({"images": digits}).model_spec.version.value == served
  for name in ("variables", "assets.extra"):
    shutil.copytree(os.path.join(source, name), os.path.join(target, name))
  assert client.wait_until_available(int(os.path.basename(target)), timeout=60) == int(
      os.path.basename(target))
  assert client.predict({"images": digits}).model_spec.version.value == int(os.path.basename(target))


def _self_signed_certificate(directory):
  """(certificate file, key file) for localhost and 127.0.0.1, valid for a day."""
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=g-import-not-at-top
  from cryptography.x509.oid import NameOID  # pylint: disable=g-import-not-at-top
  import ipaddress  # pylint: disable=g-import-not-at-top
  key = ec.generate_private_key(ec.SECP256R1())
  name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
  now = datetime.datetime.now(datetime.timezone.utc)
  certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                 .public_key(key.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(minutes=5))
                 .not_valid_after(now + datetime.timedelta(days=1))
                 .add_extension(x509.SubjectAlternativeName([
                     x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                     x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
                 .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                 .sign(key, hashes.SHA256()))
  cert_file, key_file = directory / "server.crt", directory / "server.key"
  cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
  key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
  return str(cert_file), str(key_file)


def test_tls_server_answers_clients_that_trust_its_certificate(start_module, ports, base, digits,
                                                               tmp_path):
  cert_file, key_file = _self_signed_certificate(tmp_path)
  with open(cert_file, "rb") as f:
    trusted = f.read()
  with running_server(start_module, ports(1)[0], base, str(tmp_path / "server.log"),
                      f"--ssl_cert_file={cert_file}",
                      f"--ssl_key_file={key_file}", root_certificates=trusted) as (client, _):
    assert client.predict_images(digits[:3])["cluster"].shape == (3,)
    plaintext = client_lib.Client(client.server, "digits", timeout=5, attempts=1)
    with pytest.raises(grpc.RpcError) as error:
      plaintext.status()
    plaintext.close()
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
  log = _read(str(tmp_path / "server.log"))
  assert "on 127.0.0.1:" in log and "(TLS)" in log


def test_unexpected_errors_answer_internal_without_details(caplog):
  class Context:
    def abort(self, code, details):
      raise RuntimeError(code, details)

  def handler():
    raise KeyError("/secret/path/in/the/message")

  with pytest.raises(RuntimeError) as aborted:
    server_lib._answer("Predict", Context(), handler)  # pylint: disable=protected-access
  assert aborted.value.args == (grpc.StatusCode.INTERNAL, server_lib.INTERNAL_MESSAGE)
  assert "/secret/path/in/the/message" in caplog.text


def test_export_errors_are_one_line_and_exit_2(run_module, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(saved_model.ExportError, match="run.json is missing"):
    saved_model.export(str(empty), str(tmp_path / "models"), "digits")
  (empty / "run.json").write_text(json.dumps({"method": "variational_clustering", "model": {}}))
  with pytest.raises(saved_model.ExportError, match="no checkpoint; train first"):
    saved_model.export(str(empty), str(tmp_path / "models"), "digits")
  (empty / "run.json").write_text(json.dumps({"method": "kmeans", "model": {}}))
  result = export(run_module, str(empty), str(tmp_path / "models"), check=False)
  assert result.returncode == 2 and "error: Unknown method 'kmeans'" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "models").exists()


def _read(path):
  with open(path) as f:
    return f.read()


def _module(channels, image_size=8):
  keras.utils.set_random_seed(0)
  model = vc_model.VariationalClustering(vc_model.Config(
      image_size=image_size, channels=channels, num_clusters=4, latent_dim=3, conv_filters=(8,),
      hidden_units=16, cluster_posterior="head"))
  return signatures.ServingModule(model, image_size, channels, {"method": "test"})


def test_preprocessing_converts_sizes_and_channels_like_training():
  rng = np.random.default_rng(1)
  rgb = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
  grey = rng.integers(0, 256, size=(3, 8, 8, 1), dtype=np.uint8)
  rgba = np.concatenate([rgb, np.full_like(rgb[..., :1], 255)], axis=-1)
  as_grey = np.round(tf.image.rgb_to_grayscale(rgb.astype(np.float32)).numpy()).astype(np.uint8)

  colour_model, grey_model = _module(3), _module(1)

  def same(module, a, b):
    out_a, out_b = module.predict_images(tf.constant(a)), module.predict_images(tf.constant(b))
    np.testing.assert_allclose(out_a["probabilities"], out_b["probabilities"], atol=1e-6)
    np.testing.assert_allclose(out_a["embedding"], out_b["embedding"], atol=1e-5)

  same(colour_model, grey, np.repeat(grey, 3, axis=-1))  # grey into an RGB model
  same(colour_model, rgba, rgb)  # alpha dropped
  same(grey_model, rgb, as_grey)  # RGB into a grey model
  same(grey_model, np.repeat(np.repeat(grey, 4, axis=1), 4, axis=2), grey)  # 32×32 → 8×8
  # A different size is resized as the training pipeline resizes it.
  odd = rng.integers(0, 256, size=(2, 13, 21, 3), dtype=np.uint8)
  resized = np.stack([data.resize_uint8(tf.constant(image), 8).numpy() for image in odd])
  same(colour_model, odd, resized)
  assert colour_model.predict_images(tf.constant(odd))["cluster"].shape == (2,)
  # Encoded files decode to what the uint8 signature sees: grey PNG, RGB PNG, RGBA PNG, JPEG.
  for module, images in ((colour_model, grey), (colour_model, rgba), (grey_model, rgb)):
    encoded = [tf.io.encode_png(image).numpy() for image in images]
    np.testing.assert_allclose(module.predict_encoded(tf.constant(encoded))["probabilities"],
                               module.predict_images(tf.constant(images))["probabilities"], atol=1e-6)
  jpeg = [tf.io.encode_jpeg(image).numpy() for image in rgb]
  decoded = np.stack([tf.io.decode_jpeg(j).numpy() for j in jpeg])
  np.testing.assert_allclose(colour_model.predict_encoded(tf.constant(jpeg))["probabilities"],
                             colour_model.predict_images(tf.constant(decoded))["probabilities"],
                             atol=1e-6)


def test_client_retries_unavailable_with_backoff_then_reports_it(ports):
  client = client_lib.Client(f"localhost:{ports(1)[0]}", "digits", timeout=5, attempts=3)
  started = time.time()
  with pytest.raises(grpc.RpcError) as error:
    client.status()
  client.close()
  assert error.value.code() == grpc.StatusCode.UNAVAILABLE
  assert time.time() - started >= 0.2 + 0.4  # two waits before the third and last attempt


def test_a_c3gan_model_exports_with_its_over_clustered_codes(tmp_path):
  from c3gan import model as c3gan_model  # pylint: disable=g-import-not-at-top
  config = c3gan_model.Config(image_size=16, channels=1, num_clusters=3, over_clustering=2,
                              g_filters=(16, 8, 8), d_filters=(8, 16), embedding_dim=8,
                              g_res_blocks=(1, 0), seed=0)
  run = {"method": "c3gan", "dataset": "digits", "model": config.__dict__}
  keras.utils.set_random_seed(0)
  model = c3gan_model.from_run(run)
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  with open(model_dir / "run.json", "w") as f:
    json.dump(run, f)
  model.set_optimizers(keras.optimizers.Adam(), keras.optimizers.Adam())
  model.d_optimizer.iterations.assign(7)
  c3gan_model.checkpoint(model).save(str(model_dir / "ckpt"))  # as training saves it
  path = saved_model.export(str(model_dir), str(tmp_path / "models"), "gan")
  loaded = tf.saved_model.load(path)
  images = np.random.default_rng(0).integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
  served = loaded.signatures[signatures.DEFAULT](images=tf.constant(images))
  expected = model(signatures.preprocess(tf.constant(images), 16, 1))["probabilities"].numpy()
  assert served["probabilities"].shape == (4, 6)
  np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
  assert int(loaded.signatures[signatures.METADATA]()["num_clusters"]) == 6
  assert loaded.signatures[signatures.METADATA]()["method"].numpy() == b"c3gan"
  assert int(loaded.signatures[signatures.METADATA]()["step"]) == 7  # D's optimizer's count
