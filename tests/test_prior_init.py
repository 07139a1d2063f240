"""Choosing the prior's initial mixture among GMM restarts by a label-free criterion."""
import numpy as np
import pytest
from sklearn import metrics

from vaeclust import prior_init


def _four_blobs(rng, n=400):
  centres = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], float) * 3
  return centres[rng.integers(0, 4, n)] + rng.normal(scale=0.3, size=(n, 2))


def _split_by_sign_of_y(choice, codes):
  assigned = choice.gmm.predict(codes)
  by_y = codes[:, 1] > 0
  return (np.all(assigned[by_y] == assigned[by_y][0])
          and np.all(assigned[~by_y] != assigned[by_y][0]))


def test_augmentation_keeps_the_split_that_augmentation_does_not_break():
  # Four blobs, two clusters: splitting by x or by y fits about equally well, but "augmentation"
  # here moves points across x = 0, so only the split by the sign of y is stable.
  rng = np.random.default_rng(0)
  codes = _four_blobs(rng)
  views = [codes * np.array([-1.0, 1.0]) for _ in range(2)]
  choice = prior_init.choose_mixture(codes, num_clusters=2, covariance="full", restarts=12, seed=0,
                                     criterion="augmentation", augmented_codes=views)
  assert min(choice.scores) < 0.6, "every restart found the stable split; the test needs both"
  assert choice.scores[choice.index] == pytest.approx(1.0)
  assert _split_by_sign_of_y(choice, codes)


def test_consensus_scores_the_majority_split_highest():
  split_by_x, split_by_y = np.repeat([0, 1], 6), np.tile([0, 1], 6)
  relabelled = 1 - split_by_x  # the same partition under other cluster numbers
  scores = prior_init.consensus([split_by_x, split_by_y, relabelled, split_by_x])
  assert scores[0] == scores[2] == scores[3] > scores[1]
  assert scores[0] > 0.6 > 0.1 > scores[1]  # ARI 1 with two of the three others, ~0 with one
  assert prior_init.consensus([split_by_x]) == [0.0]


def test_consensus_keeps_a_fit_that_most_restarts_agree_with():
  rng = np.random.default_rng(1)
  codes = _four_blobs(rng)
  # Three clusters for four blobs: restarts merge different pairs, so they disagree.
  choice = prior_init.choose_mixture(codes, num_clusters=3, covariance="diag", restarts=6, seed=0,
                                     criterion="consensus")
  assert len(set(np.round(choice.scores, 6))) > 1, "all restarts agree; the test needs them not to"
  assert choice.index == int(np.argmax(choice.scores))


def test_likelihood_keeps_the_most_likely_fit():
  rng = np.random.default_rng(1)
  codes = _four_blobs(rng)
  # Three clusters for four blobs: restarts merge different pairs, with different likelihoods.
  choice = prior_init.choose_mixture(codes, num_clusters=3, covariance="diag", restarts=6, seed=0,
                                     criterion="likelihood")
  assert len(set(np.round(choice.log_likelihoods, 6))) > 1
  assert choice.gmm.lower_bound_ == max(choice.log_likelihoods) == choice.scores[choice.index]


@pytest.mark.parametrize("kwargs, message", [
    ({"restarts": 0}, "restarts"),
    ({"criterion": "best"}, "criterion must be one of"),
    ({"criterion": "augmentation"}, "needs augmented codes"),
])
def test_rejects_bad_arguments(kwargs, message):
  arguments = dict(codes=np.zeros((10, 2)), num_clusters=2, covariance="full", restarts=2, seed=0,
                   criterion="likelihood")
  with pytest.raises(ValueError, match=message):
    prior_init.choose_mixture(**{**arguments, **kwargs})


def test_coassociation_groups_recover_a_split_that_no_single_partition_has():
  truth = np.repeat([0, 1, 2], 4)
  partitions = []
  for wrong in (0, 4, 8, 1, 5):  # each partition misplaces a different example
    partition = truth.copy()
    partition[wrong] = (truth[wrong] + 1) % 3
    partitions.append(partition)
  assert all(not np.array_equal(p, truth) for p in partitions)
  groups = prior_init.coassociation_groups(partitions, num_clusters=3)
  assert metrics.adjusted_rand_score(truth, groups) == 1.0


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_coassociation_mixture_clusters_the_blobs(covariance, monkeypatch):
  monkeypatch.setattr(prior_init, "COASSOCIATION_EXAMPLES", 150)  # groups from a subsample
  rng = np.random.default_rng(2)
  codes = _four_blobs(rng)
  choice = prior_init.choose_mixture(codes, num_clusters=4, covariance=covariance, restarts=5,
                                     seed=0, criterion="coassociation")
  assert choice.index == -1 and len(choice.scores) == 5
  blob = (codes[:, 0] > 0) * 2 + (codes[:, 1] > 0)
  assert metrics.adjusted_rand_score(blob, choice.gmm.predict(codes)) == 1.0
  assert np.sort(choice.gmm.weights_) == pytest.approx(np.sort(np.bincount(blob)) / len(blob), abs=1e-3)


def test_mixture_from_groups_starts_each_component_at_its_groups_moments():
  rng = np.random.default_rng(2)
  codes = _four_blobs(rng)
  groups = (codes[:, 0] > 0) * 2 + (codes[:, 1] > 0)
  group_means = np.stack([codes[groups == k].mean(0) for k in range(4)])
  # hard groups, and soft ones whose moments are pulled towards the centre (one EM step undoes it)
  for responsibilities in (np.eye(4)[groups], 0.9 * np.eye(4)[groups] + 0.025):
    gmm = prior_init.mixture_from_groups(codes, codes, responsibilities, "diag", seed=0, refine=False)
    assert gmm.n_iter_ == 1
    np.testing.assert_allclose(gmm.means_, group_means, atol=0.05)
    assert metrics.adjusted_rand_score(groups, gmm.predict(codes)) == 1.0
  refined = prior_init.mixture_from_groups(codes, codes, np.eye(4)[groups], "full", seed=0)
  assert refined.n_iter_ > 1 and metrics.adjusted_rand_score(groups, refined.predict(codes)) == 1.0


def _two_rings(rng, n=300):
  radius = np.repeat([1.0, 4.0], n // 2)
  angle = rng.uniform(0, 2 * np.pi, n)
  rings = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
  return rings + rng.normal(scale=0.1, size=rings.shape), np.repeat([0, 1], n // 2)


@pytest.mark.xdist_group("umap")  # see test_vaeclust_main
def test_umap_embedding_unrolls_groups_that_a_mixture_of_the_codes_cannot_split():
  codes, rings = _two_rings(np.random.default_rng(0))
  views = [codes + 0.01]
  embedded, (embedded_view,) = prior_init.umap_embedding(codes, views, dims=2, seed=0)
  assert embedded.shape == embedded_view.shape == (len(codes), 2)
  on_codes = prior_init.choose_mixture(codes, 2, "full", restarts=1, seed=0, criterion="likelihood")
  on_embedding = prior_init.choose_mixture(embedded, 2, "full", restarts=1, seed=0,
                                           criterion="likelihood")
  assert metrics.adjusted_rand_score(rings, on_codes.gmm.predict(codes)) < 0.1
  assert metrics.adjusted_rand_score(rings, on_embedding.gmm.predict(embedded)) == 1.0
