"""Shared test set-up: quiet TensorFlow, CPU only (split in two logical devices), fixed seeds;
runners of the entry points, in this process (`vc_main`, `c3gan_main`, `in_process`, and the
export commands: `command_in_process`; a main's flags alone: `flags_of`) and as a command
(`run_module`, `start_module`); free ports."""
import contextlib
import dataclasses
import functools
import importlib
import io
import logging
import os
import socket
import subprocess
import sys
import unittest.mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top,wrong-import-position
import keras  # pylint: disable=g-import-not-at-top,wrong-import-position


# Two logical CPU devices (before TensorFlow initialises its devices), so that in-process tests
# can run MirroredStrategy with two replicas.
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)

# After the split: the project's modules are imported once TensorFlow's devices are configured.
from vaeclust.lib import common_flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaeclust.lib import experiment  # pylint: disable=g-import-not-at-top,wrong-import-position


ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


@dataclasses.dataclass
class Finished:
  """How an entry point ended: its exit code, what it logged and printed to stderr, its stdout."""
  returncode: int
  stderr: str
  stdout: str = ""


@contextlib.contextmanager
def _captured():
  """(log, stdout) StringIOs catching what an entry point logs and prints meanwhile."""
  log, out = io.StringIO(), io.StringIO()
  handler = logging.StreamHandler(log)
  absl_logger = logging.getLogger("absl")
  absl_logger.addHandler(handler)
  absl_logging.set_verbosity(absl_logging.INFO)
  try:
    with contextlib.redirect_stderr(log), contextlib.redirect_stdout(out):
      yield log, out
  finally:
    absl_logger.removeHandler(handler)


def _exit_code(run) -> int:
  """0, or the code `run()` exits with."""
  try:
    run()
  except SystemExit as e:
    return e.code
  return 0


def _finished(code, log, out, check: bool) -> Finished:
  """The Finished of a run; with `check`, a failed run fails the test with its log's end."""
  finished = Finished(code, log.getvalue(), out.getvalue())
  if check and code:
    raise AssertionError(f"exit {code}\n{finished.stderr[-4000:]}")
  return finished


def _method_with_its_flags(main_module: str):
  """The METHOD of vaeclust.main or c3gan.main, its flags (and the shared ones) in flags.FLAGS,
  all unparsed."""
  method = importlib.import_module(main_module).METHOD
  common_flags.use(method.flags)
  flags.FLAGS.unparse_flags()
  return method


@contextlib.contextmanager
def parsed_flags(main_module: str, *args):
  """flags.FLAGS as `python -m <main_module> ARGS` parses them, for code that reads them outside
  a run; unparsed afterwards."""
  _method_with_its_flags(main_module)
  flags.FLAGS([main_module, *args])
  try:
    yield
  finally:
    flags.FLAGS.unparse_flags()


def run_in_process(main_module: str, *args, check: bool = True) -> Finished:
  """`python -m <main_module> ARGS` (vaeclust.main or c3gan.main) in this process: its flags
  parsed as app.run would, its run, its exit (flag errors: 1, `fail`: 2) and its log."""
  method = _method_with_its_flags(main_module)
  code = 0
  policy = keras.mixed_precision.global_policy()  # a run sets it for the process
  try:
    with _captured() as (log, out):
      try:
        flags.FLAGS([main_module, *args])
      except flags.Error as e:
        print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
        code = 1
      if not code:
        code = _exit_code(lambda: experiment.run(method))
  finally:
    keras.mixed_precision.set_global_policy(policy)
  return _finished(code, log, out, check)


def run_command_in_process(module_name: str, *args, check: bool = True) -> Finished:
  """`python -m <module> ARGS` of a command with flags of its own (export.client,
  export.saved_model) in this process: its flags in a FlagValues of their own, its main, its exit
  and its log."""
  module = importlib.import_module(module_name)
  own = flags.FlagValues()
  module.define_flags(own)
  with _captured() as (log, out):
    try:
      argv = own([module_name, *args])
    except flags.Error as e:
      print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
      return _finished(1, log, out, check)
    with unittest.mock.patch.object(module, "FLAGS", own):
      code = _exit_code(lambda: module.main(argv))
  return _finished(code, log, out, check)


def run_command(module: str, *args, check: bool = True, timeout: float = 300) -> Finished:
  """`python -m <module> ARGS` as its own process (for what only a command shows: exit codes,
  kills, several processes)."""
  result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)
  if check and result.returncode != 0:
    raise AssertionError(f"exit {result.returncode}\n{result.stderr[-4000:]}")
  return Finished(result.returncode, result.stderr, result.stdout)


def start_command(module: str, *args, stderr=subprocess.DEVNULL, **env) -> subprocess.Popen:
  """`python -m <module> ARGS` started in the background (stdout discarded; `env` adds to the
  quiet CPU-only environment)."""
  return subprocess.Popen([sys.executable, "-m", module, *args], env=dict(ENV, **env),
                          stdout=subprocess.DEVNULL, stderr=stderr)


# The smallest runs of each method that still cluster the 8×8 digits.
VC_TINY = ["--dataset=digits", "--image_size=8", "--conv_filters=16", "--hidden_units=64",
           "--latent_dim=8", "--num_clusters=10", "--batch_size=64", "--eval_batch_size=512",
           "--log_every=10", "--seed=1"]
C3GAN_TINY = ["--dataset=digits", "--image_size=8", "--g_filters=16,8", "--d_filters=8",
              "--embedding_dim=8", "--num_clusters=10", "--over_clustering=2", "--batch_size=32",
              "--g_res_blocks=1,0",
              "--eval_batch_size=512", "--log_every=10", "--noflip", "--seed=1"]


@pytest.fixture(scope="session")
def tiny_flags():
  """Each method's tiny flags by main package name (vaeclust, c3gan)."""
  return {"vaeclust": list(VC_TINY), "c3gan": list(C3GAN_TINY)}


@pytest.fixture(scope="session")
def in_process():
  """run_in_process."""
  return run_in_process


@pytest.fixture(scope="session")
def vc_tiny():
  return list(VC_TINY)


@pytest.fixture(scope="session")
def c3gan_tiny():
  return list(C3GAN_TINY)


@pytest.fixture(scope="session")
def vc_main():
  """vaeclust.main in this process (run_in_process)."""
  return functools.partial(run_in_process, "vaeclust.main")


@pytest.fixture(scope="session")
def c3gan_main():
  """c3gan.main in this process (run_in_process)."""
  return functools.partial(run_in_process, "c3gan.main")


@pytest.fixture(scope="session")
def flags_of():
  """parsed_flags."""
  return parsed_flags


@pytest.fixture(scope="session")
def command_in_process():
  """run_command_in_process."""
  return run_command_in_process


@pytest.fixture(scope="session")
def run_module():
  """run_command: a module as its own process."""
  return run_command


@pytest.fixture(scope="session")
def start_module():
  """start_command: a module as its own process, in the background."""
  return start_command


def free_ports(count: int):
  """`count` TCP ports free right now on localhost."""
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.fixture(scope="session")
def ports():
  """free_ports."""
  return free_ports


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
  """The tests of a module that use its `trained` fixture (a module fixture that trains a run)
  run in one xdist worker (--dist loadgroup), which trains the run once, not once per worker."""
  for item in items:
    if "trained" in item.fixturenames:
      item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}.trained"))


@pytest.fixture(autouse=True)
def fixed_seeds():
  np.random.seed(0)
  tf.random.set_seed(0)


@pytest.fixture
def odd_image_folder(tmp_path):
  """A flat folder with one file of each awkward kind: returns (folder, {readable file: the RGB
  it shows}, [unreadable files])."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "images"
  folder.mkdir()
  noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  Image.fromarray(noise).save(folder / "whole.jpg", quality=90)
  whole = (folder / "whole.jpg").read_bytes()
  (folder / "truncated.jpg").write_bytes(whole[:len(whole) * 2 // 3])
  with Image.open(folder / "truncated.jpg") as image:
    image.verify()  # a header check takes it for an image
  (folder / "empty.png").write_bytes(b"")
  Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
  Image.fromarray(np.full((20, 30), 100 * 257, np.uint16)).save(folder / "sixteen_bit.png")
  palette = Image.new("P", (20, 20), 1)
  palette.putpalette([0, 0, 0, 10, 200, 30])
  palette.save(folder / "palette.gif")
  Image.new("RGBA", (20, 20), (0, 0, 250, 100)).save(folder / "rgba.png")
  Image.new("RGB", (1, 1), (0, 250, 0)).save(folder / "one_pixel.png")
  Image.new("RGB", (8000, 8000), (250, 250, 0)).save(folder / "huge.png")
  readable = {"whole.jpg": tuple(noise.mean(axis=(0, 1))), "cmyk.jpg": (255, 0, 0),
              "sixteen_bit.png": (100, 100, 100), "palette.gif": (10, 200, 30),
              "rgba.png": (0, 0, 250), "one_pixel.png": (0, 250, 0), "huge.png": (250, 250, 0)}
  return folder, readable, ["empty.png", "truncated.jpg"]
