"""The Variational Clustering model: the GMM initialisation, the collapse guard, its pieces."""
import keras
import numpy as np
from sklearn import mixture
import tensorflow as tf
import tensorflow_probability as tfp

from vaeclust import losses
from vaeclust import model as vc_model
from vaeclust.lib import data
from vaeclust.lib import noise as noise_lib


def _digits(n=None):
  ds, _ = data.load("digits", split="all", image_size=8)
  images = np.stack([e["image"] for e in ds.as_numpy_iterator()]).astype(np.float32) / 255.0
  return images[:n]


def _model(**overrides):
  config = dict(image_size=8, channels=1, num_clusters=6, latent_dim=4, conv_filters=(16,),
                hidden_units=32, learning_rate=3e-3, seed=0)
  config.update(overrides)
  keras.utils.set_random_seed(0)
  model = vc_model.VariationalClustering(vc_model.Config(**config))
  model.compile(optimizer=keras.optimizers.Adam(model.config.learning_rate))
  model.optimizer.build(model.trainable_variables)
  return model


def test_prior_initialised_from_codes_clusters_like_that_gmm():
  model = _model()
  images = _digits(600)
  codes = model(images)["embedding"].numpy()
  gmm = mixture.GaussianMixture(model.config.num_clusters, covariance_type="full", random_state=0).fit(codes)
  model.init_prior(gmm.weights_, gmm.means_, gmm.covariances_)
  assert bool(model.prior_initialized.numpy())
  # q(c|x) = p(c | z = m(x)) + a head that starts at zero
  np.testing.assert_array_equal(model(images)["probabilities"].numpy().argmax(1), gmm.predict(codes))


def test_every_variable_exists_before_the_first_step_and_all_get_gradients():
  model = _model(consistency_weight=1.0, balance_weight=1.0, pretrain_steps=0)
  before = [v.numpy().copy() for v in model.trainable_variables]
  step = tf.function(model.train_step, autograph=False)
  logs = step({"image": tf.constant(_digits(32))})
  assert np.isfinite(float(logs["loss"]))
  moved = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)]
  names = [v.path for v, m in zip(model.trainable_variables, moved) if not m]
  assert not names, f"not trained: {names}"


def _used_clusters_after_training(balance_weight):
  model = _model(cluster_posterior="head", balance_weight=balance_weight)
  # Start collapsed: every image in cluster 0.
  model.cluster_logits.bias.assign(np.array([8.0] + [0.0] * 5, np.float32))
  images = _digits()
  batches = data.training_batches(tf.data.Dataset.from_tensor_slices(
      {"image": (images * 255).astype(np.uint8), "label": np.zeros(len(images), np.int64),
       "id": np.array([str(i) for i in range(len(images))])}), 64, seed=0)
  step = tf.function(model.train_step, autograph=False)
  for batch in batches.take(150):
    logs = step(batch)
  clusters = model(images)["probabilities"].numpy().argmax(1)
  return len(np.unique(clusters)), float(logs["balance_kl"])


def test_balance_term_pulls_a_collapsed_model_out_of_collapse():
  used_with, balance_with = _used_clusters_after_training(balance_weight=5.0)
  used_without, balance_without = _used_clusters_after_training(balance_weight=0.0)
  assert used_with >= 5
  assert balance_with < 0.2 and balance_with < balance_without
  assert used_with >= used_without


def test_temperature_and_kl_weight_schedules():
  model = _model(pretrain_steps=10, temperature_start=1.0, temperature_end=0.1,
                 temperature_decay_steps=100, kl_warmup_steps=20)
  model.optimizer.iterations.assign(10)
  assert float(model.temperature()) == 1.0 and abs(float(model.kl_weight()) - 0.05) < 1e-6
  model.optimizer.iterations.assign(110)
  np.testing.assert_allclose(float(model.temperature()), np.exp(-1.0), rtol=1e-5)
  assert float(model.kl_weight()) == 1.0
  model.optimizer.iterations.assign(10_000)
  np.testing.assert_allclose(float(model.temperature()), 0.1)


def test_elbo_steps_ramp_the_learning_rate_up_after_the_warm_up():
  model = _model(pretrain_steps=10, learning_rate=2e-3, learning_rate_ramp_steps=40)
  model.optimizer.iterations.assign(10)  # the first ELBO step
  model.train_step({"image": tf.constant(_digits(16))})
  np.testing.assert_allclose(float(model.optimizer.learning_rate), 2e-3 / 40, rtol=1e-6)
  for step, fraction in ((30, 21 / 40), (49, 1.0), (1_000, 1.0)):
    model.optimizer.iterations.assign(step)
    np.testing.assert_allclose(float(model.learning_rate()), 2e-3 * fraction, rtol=1e-6)
  without = _model(pretrain_steps=10, learning_rate=2e-3)
  without.optimizer.iterations.assign(10)
  assert float(without.learning_rate()) == np.float32(2e-3)


def test_samples_per_component_have_image_shape_and_range():
  samples = _model().sample_images(3).numpy()
  assert samples.shape == (6, 3, 8, 8, 1)
  assert samples.min() >= 0.0 and samples.max() <= 1.0


def test_relaxed_sample_follows_tfp_relaxed_one_hot_categorical():
  logits = tf.math.log(tf.constant([[0.6, 0.3, 0.1]]))
  temperature = 0.5
  noise = noise_lib.BatchNoise(seed=0, step=0, batch_size=20_000)
  ours = vc_model.relaxed_one_hot_sample(tf.tile(logits, [20_000, 1]), temperature, noise).numpy()
  reference = tfp.distributions.RelaxedOneHotCategorical(temperature, logits=logits[0]).sample(
      20_000, seed=1).numpy()
  np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(ours.mean(axis=0), reference.mean(axis=0), atol=0.015)
  np.testing.assert_allclose(np.quantile(ours.max(axis=1), [0.1, 0.5, 0.9]),
                             np.quantile(reference.max(axis=1), [0.1, 0.5, 0.9]), atol=0.02)
  np.testing.assert_allclose(np.bincount(ours.argmax(axis=1)) / 20_000, [0.6, 0.3, 0.1], atol=0.015)


def test_initial_posterior_scale_starts_q_z_at_that_fraction_of_the_components_spread():
  model = _model(initial_posterior_scale=0.1, prior_covariance="diag")
  images = _digits(300)
  weights = np.full(6, 1 / 6)
  variances = np.random.default_rng(0).uniform(0.5, 2.0, size=(6, 4))
  model.init_prior(weights, np.zeros((6, 4)), variances)
  _, scales = model.posterior(model.encoder(images), tf.one_hot(np.arange(300) % 6, 6))
  expected = 0.1 * np.sqrt(weights @ variances)
  np.testing.assert_allclose(scales.numpy(), np.broadcast_to(expected, (300, 4)), rtol=1e-4)
  # Left at 0, the untrained scale head is kept, and it depends on the image.
  untouched = _model(prior_covariance="diag", initial_posterior_scale=0.0)
  untouched.init_prior(weights, np.zeros((6, 4)), variances)
  _, scales = untouched.posterior(untouched.encoder(images), tf.one_hot(np.zeros(300, int), 6))
  assert scales.numpy().std(axis=0).min() > 1e-3


def test_contrastive_weight_adds_the_views_nt_xent_to_the_training_loss():
  batch = {"image": tf.constant(_digits(32))}
  plain = tf.function(_model(pretrain_steps=0).train_step, autograph=False)(batch)
  model = _model(pretrain_steps=0, contrastive_weight=2.0)
  before = [v.numpy().copy() for v in model.encoder.trainable_variables]
  logs = tf.function(model.train_step, autograph=False)(batch)
  assert "contrastive" not in plain and float(logs["contrastive"]) > 0
  # same weights and noise: the ELBO terms agree, and the loss adds 2 × the NT-Xent
  np.testing.assert_allclose(logs["reconstruction"], plain["reconstruction"], rtol=1e-5)
  np.testing.assert_allclose(logs["loss"], plain["loss"] + 2.0 * logs["contrastive"], rtol=1e-5)
  assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.encoder.trainable_variables))


def test_consistency_of_colour_images_compares_q_c_under_the_nt_xent_views():
  """q(c|x) of a colour image must match q(c|x') for x' a crop / flip / colour-jitter view (the
  NT-Xent views), not an affine warp that keeps the colours the clusters could follow."""
  images = tf.constant(np.random.default_rng(0).random((16, 8, 8, 3), np.float32))
  model = _model(channels=3, consistency_weight=1.0, pretrain_steps=0)
  views = []

  def recorded_view(x, noise):
    views.append(vc_model.VariationalClustering.contrastive_view(model, x, noise))
    return views[-1]

  model.contrastive_view = recorded_view
  terms, _ = model.objective_terms(images, training=True,
                                   noise=noise_lib.BatchNoise(0, 0, 16))
  assert len(views) == 1
  logits = model.cluster_posterior_logits(model.encoder(images, training=True))
  view_logits = model.cluster_posterior_logits(model.encoder(views[0], training=True))
  np.testing.assert_allclose(terms["consistency"],
                             losses.consistency_ce(logits, view_logits), rtol=1e-5)
