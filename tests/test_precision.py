"""Mixed precision and XLA compute the float32 losses (to tolerance) on tiny models."""
import contextlib
import functools
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from c3gan import model as c3gan_model
from vaeclust import model as vc_model
from vaeclust.lib import experiment

# (policy, XLA, relative tolerance of each loss against float32 without XLA); bfloat16 with XLA
# together runs end to end in test_mains_train_and_evaluate_with_mixed_precision_or_xla.
CASES = [("float32", True, 1e-3), ("mixed_float16", False, 5e-2), ("mixed_bfloat16", False, 5e-2)]


@contextlib.contextmanager
def _policy(name):
  keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy("float32")


@functools.lru_cache  # built once per model
def _float32_logs(build):
  return build("float32", False)[0]


def _vc_logs(policy, jit_compile):
  with _policy(policy):
    keras.utils.set_random_seed(0)
    model = vc_model.VariationalClustering(vc_model.Config(
        image_size=8, channels=1, num_clusters=4, latent_dim=3, conv_filters=(8, 16),
        hidden_units=16, balance_weight=1.0, consistency_weight=0.5))
    model.compile(optimizer=experiment.optimizer(keras.optimizers.Adam(1e-3)))
    model.optimizer.build(model.trainable_variables)
    images = tf.random.stateless_uniform([16, 8, 8, 1], seed=[1, 2])
    logs = tf.function(model.train_step, jit_compile=jit_compile, autograph=False)(
        {"image": images})
    assert model(images)["logits"].dtype == tf.float32
    assert model.prior.log_joint(tf.zeros([2, 3])).dtype == tf.float32
    return {name: float(value) for name, value in logs.items()}, model


def _c3gan_logs(policy, jit_compile):
  with _policy(policy):
    keras.utils.set_random_seed(0)
    model = c3gan_model.C3GAN(c3gan_model.Config(
        image_size=8, channels=3, num_clusters=3, over_clustering=2, z_dim=8, code_noise_dim=4,
        g_filters=(16, 8), d_filters=(8,), embedding_dim=8, g_res_blocks=(0, 0)))
    model.set_optimizers(experiment.optimizer(keras.optimizers.Adam(2e-4, beta_1=0.5)),
                         experiment.optimizer(keras.optimizers.Adam(2e-4, beta_1=0.5)))
    images = tf.random.stateless_uniform([6, 8, 8, 3], seed=[3, 4])
    logs = tf.function(model.train_step, jit_compile=jit_compile, autograph=False)(
        {"image": images})
    assert model(images)["embedding"].dtype == tf.float32
    return {name: float(value) for name, value in logs.items()}, model


@pytest.mark.parametrize("build", [  # each model's cases in one worker, which builds the reference once
    pytest.param(_vc_logs, id="vc", marks=pytest.mark.xdist_group("precision_vc")),
    pytest.param(_c3gan_logs, id="c3gan", marks=pytest.mark.xdist_group("precision_c3gan"))])
@pytest.mark.parametrize("policy,jit_compile,tolerance", CASES)
def test_a_training_step_gives_the_float32_losses(build, policy, jit_compile, tolerance):
  reference = _float32_logs(build)
  logs, model = build(policy, jit_compile)
  assert logs.keys() == reference.keys()
  for name, value in reference.items():
    assert np.isfinite(logs[name]), name
    assert logs[name] == pytest.approx(value, rel=tolerance, abs=tolerance), name
  optimizers = [model.optimizer] if hasattr(model, "prior") else [model.d_optimizer, model.g_optimizer]
  for optimizer in optimizers:  # dynamic loss scaling exactly where float16 needs it
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")


# One run per main: each policy's steps on either model are tested above, loss-scaled steps on
# replicas in test_distribute, and the refusal to resume under another policy is the shared
# experiment.check_resumed_run's.
@pytest.mark.parametrize("main, extra", [
    ("vaeclust", ["--jit_compile", "--mixed_precision=mixed_bfloat16", "--pretrain_steps=5",
                  "--gmm_restarts=2", "--consistency_weight=0.5"]),
    ("c3gan", ["--cpu_devices=2", "--mixed_precision=mixed_float16"]),
], ids=["vc-bfloat16-xla", "c3gan-float16-2-replicas"])
def test_mains_train_and_evaluate_with_mixed_precision_or_xla(in_process, tiny_flags, tmp_path,
                                                            main, extra):
  model_dir = str(tmp_path / "run")
  in_process(f"{main}.main", *tiny_flags[main], f"--model_dir={model_dir}", "--train_steps=10",
             *extra)
  with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["step"] == 10 and metrics["num_examples"] == 1797 and 0 < metrics["acc"] <= 1
  if "--mixed_precision=mixed_float16" in extra:  # its optimizer state has a loss scale
    resumed = in_process(f"{main}.main", *tiny_flags[main], f"--model_dir={model_dir}",
                         "--train_steps=20", check=False)  # refused before any training
    assert resumed.returncode == 2
    assert "was trained with --mixed_precision=mixed_float16" in resumed.stderr
