"""C3-GAN pieces: network outputs, each loss against hand computation, which step trains what,
the foreground warp, and scoring with over-clustering."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from c3gan import losses
from c3gan import model as c3gan_model
from c3gan import networks as c3gan_networks
from vaeclust.lib import augment
from vaeclust.lib import contrastive
from vaeclust.lib import evaluation


def _model(**overrides):
  config = dict(image_size=16, channels=1, num_clusters=3, over_clustering=2, g_filters=(16, 8, 8),
                d_filters=(8, 16), embedding_dim=8, g_res_blocks=(1, 0), seed=0)
  config.update(overrides)
  keras.utils.set_random_seed(0)
  model = c3gan_model.C3GAN(c3gan_model.Config(**config))
  model.set_optimizers(keras.optimizers.Adam(2e-4, beta_1=0.5), keras.optimizers.Adam(2e-4, beta_1=0.5))
  return model


# ----- networks ------------------------------------------------------------------------------------

def test_generator_outputs_have_image_shape_range_and_composition():
  model = _model(channels=3)
  sample = model.sample_latents(model.step_noise(5))
  fake = model.generate(sample, training=True)
  for name in ("background", "foreground", "image", "masked"):
    assert fake[name].shape == (5, 16, 16, 3), name
  for name in ("background", "foreground"):
    values = fake[name].numpy()
    assert values.min() >= -1 and values.max() <= 1 and values.std() > 0, name
  assert fake["mask"].shape == (5, 16, 16, 1)
  mask = fake["mask"].numpy()
  assert mask.min() >= 0 and mask.max() <= 1
  np.testing.assert_allclose(
      fake["image"], fake["background"] * (1 - fake["mask"]) + fake["foreground"] * fake["mask"], atol=1e-6)
  np.testing.assert_allclose(fake["masked"], fake["mask"] * fake["image"], atol=1e-6)
  assert fake["image"].numpy().min() >= -1 and fake["image"].numpy().max() <= 1


def test_codes_are_distinct_within_a_batch_when_there_are_enough():
  model = _model(num_clusters=4, over_clustering=2)  # 8 codes
  codes = model.sample_latents(model.step_noise(8))["codes"].numpy()
  assert sorted(codes) == list(range(8))
  codes = model.sample_latents(model.step_noise(20))["codes"].numpy()  # more fakes than codes: with replacement
  assert codes.shape == (20,) and codes.min() >= 0 and codes.max() < 8


def test_discriminator_and_inference_outputs():
  model = _model()
  images = tf.random.uniform([4, 16, 16, 1], seed=1)
  logit, embedding, _ = model.discriminator(images * 2 - 1)
  assert logit.shape == (4,) and embedding.shape == (4, 8)
  out = model(images)
  assert out["logits"].shape == out["probabilities"].shape == (4, 6)  # 3 classes × 2
  np.testing.assert_allclose(tf.reduce_sum(out["probabilities"], axis=1), 1.0, atol=1e-5)
  # logits are cosines / τ, so they lie in [-1/τ, 1/τ]
  assert np.all(np.abs(out["logits"].numpy()) <= 1 / 0.1 + 1e-4)
  np.testing.assert_allclose(out["embedding"], embedding, atol=1e-5)


def test_reference_size_matches_the_reference_parameter_counts():
  model = c3gan_model.C3GAN(c3gan_model.Config(image_size=128, channels=3, num_clusters=200,
                                               over_clustering=2))
  g = model.background_generator.count_params() + model.foreground_generator.count_params()
  d = model.discriminator.count_params() + model.centroid_table.count_params()
  assert abs(g / 8.6e6 - 1) < 0.02 and abs(d / 16.1e6 - 1) < 0.02, (g, d)


def test_foreground_and_mask_are_warped_by_the_given_transform():
  model = _model()
  sample = model.sample_latents(model.step_noise(2))
  plain = model.generate(dict(sample, transforms=None), training=False)
  # shift right by 3 pixels and down by 2 (fractions of the 16-pixel image)
  transforms = augment.affine_transforms(tf.ones([2]), tf.zeros([2]), tf.fill([2], 3 / 16),
                                         tf.fill([2], 2 / 16), 16, 16)
  warped = model.generate(dict(sample, transforms=transforms), training=False)
  for name in ("foreground", "mask"):
    np.testing.assert_allclose(warped[name][:, 2:, 3:], plain[name][:, :-2, :-3], atol=1e-5)
    assert np.all(warped[name].numpy()[:, :2] == 0) and np.all(warped[name].numpy()[:, :, :3] == 0)
  np.testing.assert_allclose(warped["background"], plain["background"], atol=1e-6)
  # where the warped mask is zero (the padding), the composition is the background
  np.testing.assert_allclose(warped["image"][:, :2], warped["background"][:, :2], atol=1e-6)


# ----- losses against hand computation ---------------------------------------------------------

def _cos(a, b):
  a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  return a @ b.T


def _log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_info_nce_against_numpy():
  embeddings = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)
  centroids = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 1.0]], np.float32)
  codes = np.array([0, 2])
  s = _cos(embeddings, centroids) / 0.5
  # first row: cosines 1, 0, -0.7071; second: 0.7071, 0.7071, 0
  np.testing.assert_allclose(s, [[2, 0, -math.sqrt(2)], [math.sqrt(2), math.sqrt(2), 0]], atol=1e-5)
  expected = -_log_softmax(s)[[0, 1], codes]
  got = losses.info_nce(embeddings, centroids, codes, 0.5).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  np.testing.assert_allclose(got[0], -2 + np.log(np.exp(2) + 1 + np.exp(-math.sqrt(2))), rtol=1e-5)


def test_nt_xent_against_numpy():
  rng = np.random.default_rng(0)
  first, second = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
  views = np.concatenate([first, second])
  s = _cos(views, views) / 0.2
  expected = []
  for i in range(6):
    positive = (i + 3) % 6
    others = [k for k in range(6) if k != i]
    expected.append(-(s[i, positive] - np.log(np.exp(s[i, others]).sum())))
  np.testing.assert_allclose(contrastive.nt_xent(first, second, 0.2), expected, rtol=1e-4)
  # identical views with orthogonal images: the positive has cosine 1, all others 0
  eye = np.eye(3, dtype=np.float32)
  np.testing.assert_allclose(contrastive.nt_xent(eye, eye, 1.0),
                             np.full(6, -1 + np.log(np.e + 4)), rtol=1e-5)


def test_entropy_terms_on_known_distributions():
  np.testing.assert_allclose(losses.entropy(tf.zeros([2, 4])), [np.log(4)] * 2, rtol=1e-6)
  assert float(losses.entropy(tf.constant([[100.0, 0.0, 0.0]]))[0]) < 1e-6
  np.testing.assert_allclose(losses.entropy(tf.math.log([[0.5, 0.25, 0.25]])), [1.5 * np.log(2)],
                             rtol=1e-6)
  np.testing.assert_allclose(losses.balance_entropy(tf.fill([5], 0.2)), -np.log(5), rtol=1e-6)
  np.testing.assert_allclose(losses.balance_entropy(tf.constant([1.0, 0.0, 0.0])), 0.0, atol=1e-6)


def test_hinge_and_mask_terms():
  logits = tf.constant([-2.0, 0.5, 3.0])
  np.testing.assert_allclose(losses.hinge_real(logits), [3.0, 0.5, 0.0])
  np.testing.assert_allclose(losses.hinge_fake(logits), [0.0, 1.5, 4.0])
  masks = tf.reshape(tf.constant([0.05, 0.5, 0.95]), [3, 1, 1, 1]) * tf.ones([3, 4, 4, 1])
  np.testing.assert_allclose(losses.mask_area(masks, 0.1, 0.9), [0.05, 0.0, 0.05], atol=1e-6)
  binary = losses.mask_binarization(tf.constant([[[[0.0], [1.0]]], [[[0.5], [0.5]]]])).numpy()
  assert binary[0] < 1e-4
  np.testing.assert_allclose(binary[1], 1.0, rtol=1e-5)  # one bit


def test_mode_seeking_against_numpy():
  rng = np.random.default_rng(0)
  images, twins = rng.uniform(-1, 1, (2, 3, 4, 4, 1)).astype(np.float32)
  twins[1] = images[1]  # a twin that ignores its noise: the largest penalty
  noises, twin_noises = rng.normal(size=(2, 3, 5)).astype(np.float32)
  expected = 1 / (np.abs(images - twins).mean(axis=(1, 2, 3))
                  / np.abs(noises - twin_noises).mean(axis=-1) + 1e-5)
  got = losses.mode_seeking(images, twins, noises, twin_noises).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert got[1] == pytest.approx(1e5) and got[1] > 100 * max(got[0], got[2])


# ----- which step trains what --------------------------------------------------------------------

def _snapshot(variables):
  return [v.numpy().copy() for v in variables]


def _moved(before, variables):
  return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def test_d_step_trains_only_d_and_centroids_and_g_step_only_g():
  model = _model(flip=False)
  images = tf.random.uniform([6, 16, 16, 1], seed=2)
  d_before, g_before = _snapshot(model.d_variables), _snapshot(model.g_variables)
  statistics = model.discriminator.non_trainable_variables
  statistics_before = _snapshot(statistics)
  logs = tf.function(lambda x: model.d_step(x, model.step_noise(6)), autograph=False)(images)
  assert all(np.isfinite(float(v)) for v in logs.values())
  still = [v.path for v, m in zip(model.d_variables, _moved(d_before, model.d_variables)) if not m]
  # The real/fake bias may keep still: while every hinge is active, its gradient is
  # mean(-1 over reals) + mean(+1 over fakes) = 0.
  assert set(still) <= {"real_fake/bias"}, still
  assert not any(_moved(g_before, model.g_variables))
  assert int(model.d_optimizer.iterations.numpy()) == 1
  assert int(model.g_optimizer.iterations.numpy()) == 0
  # D's batch-norm moving statistics follow the real images only
  model_alone = _model(flip=False)  # the same initial weights
  model_alone.discriminator(images * 2 - 1, training=True)
  for after, alone, before in zip(statistics, model_alone.discriminator.non_trainable_variables,
                                  statistics_before):
    np.testing.assert_allclose(after.numpy(), alone.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(after.numpy(), before)
  statistics_before = _snapshot(statistics)

  d_before, g_before = _snapshot(model.d_variables), _snapshot(model.g_variables)
  logs = tf.function(lambda: model.g_step(model.step_noise(6)), autograph=False)()
  assert all(np.isfinite(float(v)) for v in logs.values())
  g_moved = _moved(g_before, model.g_variables)
  assert all(g_moved), [v.path for v, m in zip(model.g_variables, g_moved) if not m]
  assert not any(_moved(d_before, model.d_variables))
  assert not any(_moved(statistics_before, statistics))
  assert int(model.g_optimizer.iterations.numpy()) == 1


def test_over_clustering_scores_give_each_class_that_many_clusters():
  labels = np.array([0] * 6 + [1] * 6)
  clusters = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 2, 2, 2])  # class 0 → 0, 1 (and one 2); 1 → 3, 2
  predictions = evaluation.Predictions(
      ids=np.array([b"x"] * 12), labels=labels, clusters=clusters, confidences=np.ones(12),
      examples=np.zeros((4, 1, 2, 2, 1), np.uint8), example_counts=np.zeros(4, int))
  over2 = evaluation.summarize(predictions, num_clusters=4, step=0, over_clustering=2)
  over1 = evaluation.summarize(predictions, num_clusters=4, step=0, over_clustering=1)
  assert over2["acc"] == pytest.approx(11 / 12)  # {0, 1} → class 0, {2, 3} → class 1
  assert over1["acc"] == pytest.approx(6 / 12)  # one cluster per class: 0 (3) and 3 (3)
  assert over2["many_to_one_acc"] == pytest.approx(11 / 12)
  assert over2["clusters_used"] == 4



def test_generator_info_scale_weighs_the_generator_step_only():
  model = _model(generator_info_scale=0.3, info_weight=5.0, info_fg_weight=1.0)
  logs = tf.function(lambda: model.g_step(model.step_noise(6)), autograph=False)()
  logs = {name: float(value) for name, value in logs.items()}
  expected = (logs["g_adversarial"] + 0.3 * (5.0 * logs["g_info"] + 1.0 * logs["g_info_fg"])
              + logs["mask_area"] + logs["mask_binary"])
  assert logs["g_loss"] == pytest.approx(expected, rel=1e-5)
  images = tf.random.uniform([6, 16, 16, 1], seed=2)
  logs = tf.function(lambda x: model.d_step(x, model.step_noise(6)), autograph=False)(images)
  logs = {name: float(value) for name, value in logs.items()}
  expected = (logs["d_hinge_real"] + logs["d_hinge_fake"] + 5.0 * logs["d_info"]
              + 1.0 * logs["d_info_fg"] + 0.1 * logs["entropy"] + logs["contrastive"]
              + 0.1 * logs["balance"])
  assert logs["d_loss"] == pytest.approx(expected, rel=1e-5)  # D keeps the full weights


def test_discriminator_without_batch_norm_judges_each_image_on_its_own():
  images = tf.random.uniform([6, 16, 16, 1], -1, 1, seed=3)
  model = _model(d_batch_norm=False)
  assert not model.discriminator.non_trainable_variables  # no batch statistics
  logit, embedding, _ = model.discriminator(images, training=True)
  alone_logit, alone_embedding, _ = model.discriminator(images[:1], training=True)
  np.testing.assert_allclose(alone_logit, logit[:1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(alone_embedding, embedding[:1], rtol=1e-5, atol=1e-6)
  inference_logit, _, _ = model.discriminator(images, training=False)
  np.testing.assert_allclose(inference_logit, logit, rtol=1e-5, atol=1e-6)
  # with batch norm (the reference), an image's score depends on the rest of its batch
  logit, _, _ = _model().discriminator(images, training=True)
  alone_logit, _, _ = _model().discriminator(images[:1], training=True)
  assert abs(float(alone_logit[0]) - float(logit[0])) > 1e-3


def test_code_samples_are_uint8_images_of_every_code():
  model = _model()
  samples = model.code_samples(4, seed=[0, 7]).numpy()
  assert samples.shape == (6, 4, 16, 16, 1) and samples.dtype == np.uint8
  assert samples.std() > 0
  np.testing.assert_array_equal(samples, model.code_samples(4, seed=[0, 7]).numpy())  # keyed
  assert not np.array_equal(samples, model.code_samples(4, seed=[0, 8]).numpy())


def test_without_background_the_foreground_generator_draws_the_whole_image():
  model = _model(background=False, generator_info_scale=0.5)
  assert model.background_generator is None
  assert model.g_variables == model.foreground_generator.trainable_variables
  fake = model.generate(model.sample_latents(model.step_noise(5)), training=True)
  assert set(fake) == {"foreground", "image"} and fake["image"].shape == (5, 16, 16, 1)
  logs = tf.function(lambda: model.g_step(model.step_noise(6)), autograph=False)()
  logs = {name: float(value) for name, value in logs.items()}
  assert set(logs) == {"g_adversarial", "g_info", "g_loss"}  # no mask, no masked InfoNCE
  assert logs["g_loss"] == pytest.approx(logs["g_adversarial"] + 0.5 * 5.0 * logs["g_info"], rel=1e-5)
  images = tf.random.uniform([6, 16, 16, 1], seed=2)
  logs = tf.function(lambda x: model.d_step(x, model.step_noise(6)), autograph=False)(images)
  assert "d_info_fg" not in logs
  assert set(model.sample_grid([0, 1], columns=3)) == {"image"}


def _code_share_of_variation(model):
  """How much of the generated images' variance is between codes (same z) rather than within."""
  codes, columns = model.config.num_codes, 8
  z = tf.tile(tf.random.stateless_normal([1, columns, model.config.z_dim], seed=[1, 2]), [codes, 1, 1])
  sample = {"z": tf.reshape(z, [codes * columns, -1]), "codes": tf.repeat(tf.range(codes), columns),
            "code_noise": tf.zeros([codes * columns, model.config.code_noise_dim])}
  images = model.generate(sample, training=True)["image"].numpy().reshape(codes, columns, -1)
  between = images.mean(axis=1).var(axis=0).sum()  # of the codes' mean images
  within = images.var(axis=1).mean(axis=0).sum()  # across z for one code
  return between / (between + within)


def test_the_code_at_the_generator_input_gives_the_code_the_say_over_z():
  plain = _code_share_of_variation(_model(background=False))
  scaled = _code_share_of_variation(_model(background=False, code_input_scale=8.0))
  assert scaled > 2 * plain  # at initialisation: 0.24 against 0.09


def test_conditional_discriminator_judges_each_image_against_its_cluster():
  model = _model(background=False, conditional_discriminator=True)
  table = model.projection_table.kernel
  assert table.shape == (6, 16 * 16) and any(v is table for v in model.d_variables)
  images = tf.random.uniform([5, 16, 16, 1], seed=4)
  logit, _, features = model.discriminator(images * 2 - 1)
  np.testing.assert_allclose(model(images)["fit"], logit, rtol=1e-5, atol=1e-6)  # starts unconditional
  table.assign(tf.random.normal(table.shape, seed=5))
  out = model(images)
  clusters = np.argmax(out["logits"].numpy(), axis=-1)
  expected = logit.numpy() + np.sum(table.numpy()[clusters] * features.numpy(), axis=-1)
  np.testing.assert_allclose(out["fit"], expected, rtol=1e-4, atol=1e-4)
  table.assign(tf.zeros(table.shape))
  tf.function(lambda x: model.d_step(x, model.step_noise(5)), autograph=False)(images)
  assert np.abs(table.numpy()).max() > 0  # D learns the per-cluster projections


def test_diversity_weight_adds_the_mode_seeking_term_to_the_generator_step_only():
  model = _model(background=False, diversity_weight=0.5)
  logs = tf.function(lambda: model.g_step(model.step_noise(6)), autograph=False)()
  logs = {name: float(value) for name, value in logs.items()}
  assert logs["g_diversity"] > 0
  assert logs["g_loss"] == pytest.approx(
      logs["g_adversarial"] + 5.0 * logs["g_info"] + 0.5 * logs["g_diversity"], rel=1e-5)
  images = tf.random.uniform([6, 16, 16, 1], seed=2)
  assert "g_diversity" not in tf.function(lambda x: model.d_step(x, model.step_noise(6)),
                                          autograph=False)(images)


def test_g_res_blocks_sets_the_full_resolution_residual_blocks_and_keeps_the_outputs():
  reference, light = _model(g_res_blocks=(3, 2)), _model(g_res_blocks=(1, 0))
  block_input = keras.Input((16, 16, 8))
  one_block = keras.Model(block_input, c3gan_networks.res_block(block_input))
  # background 3 → 1, foreground's trunk 3 → 1, its head 2 → 0: six blocks at width 8
  fewer = sum(reference_net.count_params() - light_net.count_params() for reference_net, light_net in
              ((reference.background_generator, light.background_generator),
               (reference.foreground_generator, light.foreground_generator)))
  assert fewer == 6 * one_block.count_params()
  for model in (reference, light):
    fake = model.generate(model.sample_latents(model.step_noise(3)), training=False)
    assert fake["image"].shape == (3, 16, 16, 1) and fake["mask"].shape == (3, 16, 16, 1)
