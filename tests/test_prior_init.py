"""Choosing the prior's initial mixture among GMM restarts by augmentation stability."""
import numpy as np
import pytest

from vaeclust import prior_init


def _four_blobs(rng, n=400):
  centres = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], float) * 3
  return centres[rng.integers(0, 4, n)] + rng.normal(scale=0.3, size=(n, 2))


def test_keeps_the_split_that_augmentation_does_not_break():
  # Four blobs, two clusters: splitting by x or by y fits about equally well, but "augmentation"
  # here moves points across x = 0, so only the split by the sign of y is stable.
  rng = np.random.default_rng(0)
  codes = _four_blobs(rng)
  views = [codes * np.array([-1.0, 1.0]) for _ in range(2)]
  choice = prior_init.fit_stable_mixture(codes, views, num_clusters=2, covariance="full",
                                         restarts=12, seed=0)
  assert min(choice.agreements) < 0.6, "every restart found the stable split; the test needs both"
  assert choice.agreement == pytest.approx(1.0)
  assigned = choice.gmm.predict(codes)
  by_y = codes[:, 1] > 0
  assert np.all(assigned[by_y] == assigned[by_y][0]) and np.all(assigned[~by_y] != assigned[by_y][0])


def test_without_augmented_codes_keeps_the_most_likely_fit():
  rng = np.random.default_rng(1)
  codes = _four_blobs(rng)
  # Three clusters for four blobs: restarts merge different pairs, with different likelihoods.
  choice = prior_init.fit_stable_mixture(codes, [], num_clusters=3, covariance="diag",
                                         restarts=6, seed=0)
  assert np.isnan(choice.agreement)
  assert len(set(np.round(choice.log_likelihoods, 6))) > 1
  assert choice.gmm.lower_bound_ == max(choice.log_likelihoods)


def test_rejects_zero_restarts():
  with pytest.raises(ValueError, match="restarts"):
    prior_init.fit_stable_mixture(np.zeros((10, 2)), [], 2, "full", 0, 0)
