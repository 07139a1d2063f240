"""The shared training loop: non-finite losses stop it at their step, before anything is saved."""
import numpy as np
import pytest
import tensorflow as tf

from vaeclust.lib import training


def test_a_non_finite_loss_stops_training_at_its_step_without_saving(tmp_path):
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    counter = tf.Variable(0, dtype=tf.int64)
    weight = tf.Variable(1.0)
  trainer = training.Trainer(strategy, counter, tf.train.Checkpoint(weight=weight), str(tmp_path),
                             tf.summary.create_noop_writer(), global_batch_size=1, log_every=10,
                             checkpoint_every=2)

  def step_fn(batch):
    del batch
    counter.assign_add(1)
    loss = tf.where(tf.equal(counter, 3), float("nan"), 1.0)  # step 3's update poisons the weight
    weight.assign(weight * loss)
    return {"loss": loss}

  with pytest.raises(FloatingPointError) as raised:
    trainer.run(step_fn, lambda ctx: tf.data.Dataset.from_tensors({"x": 0.0}).repeat(), 20)
  last = tf.train.latest_checkpoint(str(tmp_path))
  assert last == str(tmp_path / "ckpt-2")
  assert f"non-finite loss at step 3; stopped without saving. The last good checkpoint is {last}" \
      in str(raised.value)
  assert np.isfinite(tf.train.load_variable(last, "weight/.ATTRIBUTES/VARIABLE_VALUE"))


def test_logged_scalars_are_the_means_over_each_log_interval(tmp_path):
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    counter = tf.Variable(0, dtype=tf.int64)
  writer = tf.summary.create_file_writer(str(tmp_path / "train"))
  trainer = training.Trainer(strategy, counter, tf.train.Checkpoint(counter=counter), str(tmp_path),
                             writer, global_batch_size=1, log_every=4, checkpoint_every=100)

  def step_fn(batch):
    del batch
    counter.assign_add(1)
    return {"loss": tf.cast(counter, tf.float32) ** 2}

  trainer.run(step_fn, lambda ctx: tf.data.Dataset.from_tensors({"x": 0.0}).repeat(), 10)
  writer.flush()
  logged = {}
  for path in tf.io.gfile.glob(str(tmp_path / "train" / "events*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == "train/loss":
          logged[event.step] = float(tf.make_ndarray(value.tensor))
  # steps 1-4, 5-8, and the last interval 9-10
  assert logged == pytest.approx({4: np.mean([1, 4, 9, 16]), 8: np.mean([25, 36, 49, 64]),
                                  10: np.mean([81, 100])})
