"""Choosing K by the BIC of Gaussian mixtures (vaeclust.num_clusters)."""
import numpy as np
import pytest

from vaeclust import num_clusters


@pytest.mark.parametrize("k,covariance", [(3, "full"), (7, "full"), (5, "diag")])
def test_the_number_of_well_separated_gaussian_blobs_is_found(k, covariance):
  rng = np.random.default_rng(k)
  centres = rng.normal(0, 10, (k, 6))
  codes = np.concatenate([c + rng.normal(0, 1, (300, 6)) * rng.uniform(0.5, 1.5, 6) for c in centres])
  choice = num_clusters.choose(codes, range(2, 13), covariance, seed=0)
  assert choice.num_clusters == k
  assert choice.candidates == list(range(2, 13)) and len(choice.scores) == 11
  assert choice.scores[k - 2] == min(choice.scores)


def test_one_blob_is_not_split_when_one_cluster_may_be_chosen():
  codes = np.random.default_rng(0).normal(0, 1, (1000, 4))
  assert num_clusters.choose(codes, range(1, 6), "full", seed=0).num_clusters == 1


def test_impossible_candidates_are_refused():
  codes = np.zeros((5, 2))
  with pytest.raises(ValueError, match="cannot be split into 6"):
    num_clusters.choose(codes, range(2, 7), "full", seed=0)
  with pytest.raises(ValueError, match="positive"):
    num_clusters.choose(codes, [], "full", seed=0)
