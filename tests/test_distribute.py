"""Training under tf.distribute is the same computation on any number of replicas: the same global
batch gives the same losses and updated weights on 1 and 2 replicas (logical CPU devices)."""
import functools
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from vaeclust import model as vc_model
from vaeclust.lib import noise as noise_lib
from test_vaeclust_main import TINY, run_main


@functools.lru_cache(maxsize=None)
def _strategy(replicas):
  """One strategy per replica count for the whole session: strategies made later on the same
  devices would reuse collective keys the runtime has already bound to other tensors."""
  return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])


def _per_replica(strategy, batch):
  """Replica r gets rows [r·b, (r+1)·b) of the global batch, as a distributed dataset gives them."""
  size = len(batch) // strategy.num_replicas_in_sync
  return strategy.experimental_distribute_values_from_function(
      lambda ctx: {"image": batch[ctx.replica_id_in_sync_group * size:
                                  (ctx.replica_id_in_sync_group + 1) * size]})


def _run_steps(strategy, step_name, model, batches):
  """Runs model.<step_name> on each global batch; returns the logs of the last (mean over replicas)."""
  @tf.function
  def step(inputs):
    logs = strategy.run(getattr(model, step_name), args=(inputs,))
    return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in logs.items()}
  for batch in batches:
    logs = step(_per_replica(strategy, batch))
  return {k: float(v) for k, v in logs.items()}


def test_noise_rows_of_two_replicas_are_the_one_replica_draws():
  def draws(strategy):
    def replica_fn():
      noise = noise_lib.BatchNoise(seed=3, step=tf.constant(5, tf.int64), batch_size=4)
      return (noise.normal([2]), noise.uniform([], 0, 7, dtype=tf.int32),
              noise.shared_uniform([6])[None])
    outputs = strategy.run(tf.function(replica_fn))
    return [np.concatenate([t.numpy() for t in strategy.experimental_local_results(o)])
            for o in outputs]

  one, two = draws(_strategy(1)), draws(_strategy(2))
  normal_one = noise_lib.BatchNoise(3, tf.constant(5, tf.int64), 8).normal([2])
  np.testing.assert_array_equal(two[0], normal_one)  # 2 replicas × 4 rows = the 8 global rows
  assert one[0].shape == (4, 2)  # a global batch of 4 has other numbers: it is another stream
  np.testing.assert_array_equal(two[2][0], two[2][1])  # shared: the same on both replicas
  np.testing.assert_array_equal(two[2][0], one[2][0])


VC_CONFIG = dict(image_size=8, channels=1, num_clusters=4, latent_dim=3, conv_filters=(8,),
                 hidden_units=16, balance_weight=1.0, consistency_weight=0.5, seed=4)


def _vc_model(strategy):
  keras.utils.set_random_seed(0)  # the same initial weights for every strategy
  with strategy.scope():
    model = vc_model.VariationalClustering(vc_model.Config(**VC_CONFIG))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.optimizer.build(model.trainable_variables)
  return model


@pytest.mark.parametrize("step_name", ["pretrain_step", "train_step"])
def test_vc_steps_match_on_one_and_two_replicas(step_name):
  batches = [tf.random.stateless_uniform([8, 8, 8, 1], seed=[i, 0]) for i in range(3)]
  results = []
  for replicas in (1, 2):
    strategy = _strategy(replicas)
    model = _vc_model(strategy)
    logs = _run_steps(strategy, step_name, model, batches)
    results.append((logs, model.trainable_variables))
  (logs_one, weights_one), (logs_two, weights_two) = results
  assert logs_one.keys() == logs_two.keys()
  for name in logs_one:
    assert logs_two[name] == pytest.approx(logs_one[name], rel=1e-4, abs=1e-5), name
  initial = _vc_model(_strategy(1)).trainable_variables
  moved = set()
  for one, two, start in zip(weights_one, weights_two, initial, strict=True):
    np.testing.assert_allclose(two.numpy(), one.numpy(), rtol=1e-4, atol=1e-5, err_msg=one.path)
    if not np.allclose(one.numpy(), start.numpy()):
      moved.add(one.path.split("/")[0])
  # it trained: encoder and decoder (and in ELBO steps the prior) moved
  assert moved >= ({"encoder", "decoder", "prior"} if step_name == "train_step" else {"encoder", "decoder"})


def _checkpoint_values(model_dir):
  """Every saved tensor (weights, optimizer slots, step) of the newest checkpoint."""
  reader = tf.train.load_checkpoint(model_dir)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _train_scalars(model_dir):
  """{(tag, step): value} of the train/ TensorBoard events."""
  values = {}
  for path in tf.io.gfile.glob(f"{model_dir}/train/events.*"):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        values[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  return values


def test_vc_main_trains_the_same_model_on_one_and_two_cpu_devices(tmp_path):
  runs = []
  for devices in (1, 2):
    model_dir = str(tmp_path / f"devices{devices}")
    run_main(*TINY, f"--model_dir={model_dir}", f"--cpu_devices={devices}", "--pretrain_steps=4",
             "--train_steps=8", "--gmm_restarts=1", "--log_every=1", "--balance_weight=1",
             "--consistency_weight=0.5")
    with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
      runs.append((_checkpoint_values(model_dir), _train_scalars(model_dir), json.load(f)))
  (weights_one, scalars_one, metrics_one), (weights_two, scalars_two, metrics_two) = runs
  assert weights_one.keys() == weights_two.keys() and len(weights_one) > 50
  for name, value in weights_one.items():
    scale = np.abs(value).max() if np.size(value) else 0.0
    np.testing.assert_allclose(weights_two[name], value, rtol=1e-3, atol=1e-4 * scale + 1e-5,
                               err_msg=name)
  losses = [key for key in scalars_one if key[0].endswith("/loss")]
  assert len(losses) == 8 and set(losses) <= set(scalars_two)  # every warm-up and ELBO step
  for key in losses:
    assert scalars_two[key] == pytest.approx(scalars_one[key], rel=1e-4), key
  # evaluation counts every image once, however many replicas trained the model
  assert metrics_one["num_examples"] == metrics_two["num_examples"] == 1797
  assert metrics_two["acc"] == pytest.approx(metrics_one["acc"], abs=2 / 1797)
