"""Training under tf.distribute is the same computation on any number of replicas and workers: the
same global batch gives the same losses and updated weights on 1 and 2 replicas (logical CPU
devices), and two workers of MultiWorkerMirroredStrategy end with the same model."""
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from c3gan import model as c3gan_model
from vaeclust import model as vc_model
from vaeclust.lib import distribute
from vaeclust.lib import noise as noise_lib


def _strategy(replicas):
  """The session's one strategy on that many CPU devices, the one the mains use (see mirrored)."""
  return distribute.make_strategy("mirrored", replicas)


def _per_replica(strategy, batch):
  """Replica r gets rows [r·b, (r+1)·b) of the global batch, as a distributed dataset gives them."""
  size = len(batch) // strategy.num_replicas_in_sync
  return strategy.experimental_distribute_values_from_function(
      lambda ctx: {"image": batch[ctx.replica_id_in_sync_group * size:
                                  (ctx.replica_id_in_sync_group + 1) * size]})


def _run_steps(strategy, step_name, model, batches):
  """Runs model.<step_name> on each global batch; returns the logs of the last (mean over replicas)."""
  @tf.function(autograph=False)  # as the trainer runs steps
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
                 hidden_units=16, balance_weight=1.0, consistency_weight=0.5,
                 warmup_contrastive_weight=0.5, learning_rate=1e-2, seed=4)


def _vc_model(strategy):
  keras.utils.set_random_seed(0)  # the same initial weights for every strategy
  with strategy.scope():
    model = vc_model.VariationalClustering(vc_model.Config(**VC_CONFIG))
    model.compile(optimizer=keras.optimizers.Adam(model.config.learning_rate))
    model.optimizer.build(model.trainable_variables)
  return model


def _same_on_one_and_two_replicas(build, step_name, batches, variables, rtol, atol):
  """Runs the steps on 1 and 2 replicas from the same initial weights, checks that the logs and
  `variables(model)` agree, and returns (paths of the variables that moved, how many there are)."""
  results = []
  for replicas in (1, 2):
    strategy = _strategy(replicas)
    model = build(strategy)
    results.append((_run_steps(strategy, step_name, model, batches), variables(model)))
  (logs_one, after_one), (logs_two, after_two) = results
  assert logs_one.keys() == logs_two.keys()
  for name in logs_one:
    assert logs_two[name] == pytest.approx(logs_one[name], rel=rtol, abs=atol), name
  initial = variables(build(_strategy(1)))
  moved = []
  for one, two, start in zip(after_one, after_two, initial, strict=True):
    np.testing.assert_allclose(two.numpy(), one.numpy(), rtol=rtol, atol=atol, err_msg=one.path)
    if not np.allclose(one.numpy(), start.numpy()):
      moved.append(one.path)
  return moved, len(initial)


@pytest.mark.parametrize("step_name", ["pretrain_step", "train_step"])
def test_vc_steps_match_on_one_and_two_replicas(step_name):
  batches = [tf.random.stateless_uniform([8, 8, 8, 1], seed=[i, 0]) for i in range(3)]
  moved, _ = _same_on_one_and_two_replicas(_vc_model, step_name, batches,
                                           lambda model: model.trainable_variables, 1e-4, 1e-5)
  # it trained: encoder and decoder (and in ELBO steps the prior) moved
  expected = {"encoder", "decoder", "prior"} if step_name == "train_step" else {"encoder", "decoder"}
  assert {path.split("/")[0] for path in moved} >= expected


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


def test_vc_main_trains_the_same_model_on_one_and_two_cpu_devices(vc_main, vc_tiny, tmp_path):
  runs = []
  for devices in (1, 2):
    model_dir = str(tmp_path / f"devices{devices}")
    vc_main(*vc_tiny, f"--model_dir={model_dir}", f"--cpu_devices={devices}",
         "--pretrain_steps=4", "--train_steps=8", "--gmm_restarts=1", "--log_every=1",
         "--balance_weight=1", "--consistency_weight=0.5")
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


def test_loss_scaled_gradients_are_unscaled_to_the_plain_update():
  variable = tf.Variable([1.0, 2.0])
  optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
  optimizer.build([variable])

  @tf.function(autograph=False)
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(variable * tf.constant([1.0, 1e-3]))
    distribute.apply_gradients(optimizer, tape, loss, [variable])

  step()
  # Gradients taken of loss × 2¹⁵ and divided by it again: the update of plain SGD.
  assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** 15
  np.testing.assert_allclose(variable.numpy(), [0.9, 2.0 - 1e-4], rtol=1e-6)


def test_loss_scaled_steps_are_skipped_on_every_replica_when_one_overflows():
  strategy = _strategy(2)
  with strategy.scope():
    variable = tf.Variable([1.0, 2.0])
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    optimizer.build([variable])

  def replica_fn():
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    with tf.GradientTape() as tape:
      # gradient 1 on the first replica, inf on the second
      loss = tf.reduce_sum(variable * tf.where(tf.equal(replica, 1), float("inf"), 1.0))
    distribute.apply_gradients(optimizer, tape, loss, [variable])

  strategy.run(tf.function(replica_fn))
  # Skipped on every replica (without the fix the first replica's finite gradient lets the
  # all-reduced inf through to the weight).
  np.testing.assert_array_equal(variable.numpy(), [1.0, 2.0])
  assert float(optimizer.dynamic_scale.numpy()) < 2.0 ** 15  # and the loss scale lowered


C3GAN_CONFIG = dict(image_size=8, channels=3, num_clusters=2, over_clustering=2, z_dim=8,
                    code_noise_dim=4, g_filters=(16, 8), d_filters=(8,), embedding_dim=8,
                    g_res_blocks=(0, 0), seed=5)


def _c3gan_model(strategy):
  keras.utils.set_random_seed(0)
  with strategy.scope():
    model = c3gan_model.C3GAN(c3gan_model.Config(**C3GAN_CONFIG))
    model.set_optimizers(keras.optimizers.Adam(1e-3, beta_1=0.5),
                         keras.optimizers.Adam(1e-3, beta_1=0.5))
  return model


def test_c3gan_steps_match_on_one_and_two_replicas():
  """Batch-norm statistics, the contrastive negatives, the codes and the noise all span the
  global batch, so 2 replicas compute what 1 does."""
  batches = [tf.random.stateless_uniform([8, 8, 8, 3], seed=[i, 1]) for i in range(2)]
  moved, total = _same_on_one_and_two_replicas(_c3gan_model, "train_step", batches,
                                               lambda model: model.variables, 1e-3, 1e-4)
  assert len(moved) > total // 2  # it trained (weights and batch-norm statistics)


def test_first_replica_values_reach_every_replica():
  strategy = _strategy(2)
  values = strategy.experimental_distribute_values_from_function(
      lambda ctx: np.full([2, 3], [1.0, np.nan][ctx.replica_id_in_sync_group], np.float32))
  first, = distribute.from_first_replica(strategy, [values])
  np.testing.assert_array_equal(first, np.ones([2, 3]))
  np.testing.assert_array_equal(distribute.from_first_replica(_strategy(1), [np.eye(2)])[0], np.eye(2))


def _run_cluster(tmp_path, tiny, free_ports, start, tag, flags, other_worker_flags=()):
  """Trains vaeclust.main (its `tiny` flags) on two local workers of MultiWorkerMirroredStrategy,
  each started by `start` (start_module); returns their logs."""
  cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
  workers, logs = [], []
  for index in range(2):
    temporary = tmp_path / f"tmp{index}"  # where a non-chief worker writes its own checkpoints
    temporary.mkdir(exist_ok=True)
    task = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    # Logs go to files: a worker blocked on a full stderr pipe would stall the other's collectives.
    logs.append(tmp_path / f"{tag}_worker{index}.log")
    with open(logs[-1], "w") as log:
      workers.append(start("vaeclust.main", *tiny, "--strategy=multi_worker", "--log_every=4",
                           *flags, *(other_worker_flags if index else ()), stderr=log,
                           TMPDIR=str(temporary), TF_CONFIG=task))
  try:
    for worker in workers:
      worker.wait(timeout=400)
  finally:
    for worker in workers:
      worker.kill()
  errors = [log.read_text() for log in logs]
  for worker, error in zip(workers, errors):
    assert worker.returncode == 0, error[-4000:]
  return errors


# Both mains train, write and resume through the same code (experiment.run; C3-GAN's steps on
# several replicas: test_c3gan_steps_match_on_one_and_two_replicas), so VC's run stands for both;
# its NT-Xent gathers codes across the workers as C3-GAN's gathers embeddings.
def test_two_workers_train_the_same_model_and_only_the_chief_writes(vc_tiny, ports, start_module,
                                                                    tmp_path):
  model_dir = str(tmp_path / "run")
  extra = ["--pretrain_steps=4", "--gmm_restarts=2", "--balance_weight=1",
           "--warmup_contrastive_weight=1", "--contrastive_weight=1"]
  # The other worker fits its GMM to fewer codes than the chief, as other hardware can end a fit
  # elsewhere: the variables must still end equal.
  other_fit = ["--gmm_init_examples=300"]
  errors = _run_cluster(tmp_path, vc_tiny, ports, start_module, "first",
                        [f"--model_dir={model_dir}", "--train_steps=8", *extra], other_fit)
  assert "2 replica(s)" in errors[0]

  other_dir = tmp_path / "tmp1" / "worker_worker_1" / "run"
  chief, other = _checkpoint_values(model_dir), _checkpoint_values(str(other_dir))
  assert chief.keys() == other.keys() and int(chief["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]) >= 1
  for name, value in chief.items():
    np.testing.assert_array_equal(other[name], value, err_msg=name)
  # the chief evaluated every image once; the other worker wrote no evaluation, summaries or run
  with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["num_examples"] == 1797 and metrics["step"] == 8
  with open(os.path.join(model_dir, "eval", "assignments.csv")) as f:
    ids = [row.split(",")[0] for row in f.read().splitlines()[1:]]
  assert len(ids) == len(set(ids)) == 1797
  assert all(name.startswith(("ckpt", "checkpoint")) for name in os.listdir(other_dir))

  # Restarted on a machine that lost its private directory, the other worker resumes from the
  # chief's checkpoint too (from its own nothing, it would start over and fail the cluster).
  shutil.rmtree(tmp_path / "tmp1")
  errors = _run_cluster(tmp_path, vc_tiny, ports, start_module, "again",
                        [f"--model_dir={model_dir}", "--train_steps=12", *extra])
  for error in errors:
    assert f"Resumed from {os.path.join(model_dir, 'ckpt-8')}" in error
  chief, other = _checkpoint_values(model_dir), _checkpoint_values(str(other_dir))
  with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
    assert json.load(f)["step"] == 12
  for name, value in chief.items():
    np.testing.assert_array_equal(other[name], value, err_msg=name)
