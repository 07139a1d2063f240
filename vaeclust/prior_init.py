"""Choosing the Gaussian mixture that initialises the prior after the warm-up.

GMMs fitted to the warm-up codes from different starts reach almost the same likelihood but split
the images very differently, and the split they start from shapes what VC training ends with. So
several fits are made and one is kept by a label-free criterion:
- "augmentation": the fit whose assignments of augmented copies of the images agree most with
  its assignments of the originals (the consistency the objective asks of q(c|x));
- "consensus": the fit whose assignments agree most (mean adjusted Rand index) with the other
  fits' — the medoid of the restarts, a split that many starts find rather than an outlier;
- "likelihood": the fit of highest likelihood (what scikit-learn's n_init keeps);
- "coassociation": no single fit: images are grouped by how often the restarts put them in the same
  component (average-linkage clustering of that co-association matrix, evidence accumulation), and
  a GMM started from the groups' moments is refined on all codes. It keeps what most restarts
  agree on pair by pair, where the other criteria must take one restart's errors with its split.

Where the fits are made is a second choice (`--init_manifold`): on the codes themselves, or (N2D:
"umap") on a UMAP embedding of them, which keeps each image's neighbourhood and so unrolls groups
that are connected but not Gaussian in code space; the groups found there are carried back as the
moments of their members' codes, because the prior lives in code space.
"""
import dataclasses
from typing import List, Sequence
import warnings

from absl import logging
import numpy as np
from sklearn import cluster
from sklearn import exceptions
from sklearn import metrics
from sklearn import mixture
import threadpoolctl

CRITERIA = ("augmentation", "consensus", "likelihood", "coassociation")
MANIFOLDS = ("none", "umap")
UMAP_NEIGHBOURS = 20  # N2D's setting (its MNIST, USPS and Fashion results)
REG_COVAR = 1e-4
COASSOCIATION_EXAMPLES = 5000  # the matrix is examples² floats

# The mixtures are small (K components of a few dimensions): BLAS threads cost more than they
# save, 20× when other work keeps the cores busy (measured: one GMM fit to 10,000 codes of 10
# dimensions, 6.7 s on two threads, 0.28 s on one).
one_blas_thread = threadpoolctl.threadpool_limits.wrap(limits=1, user_api="blas")


@dataclasses.dataclass
class Choice:
  gmm: mixture.GaussianMixture
  index: int  # of the kept restart (-1: the co-association mixture, none of them)
  scores: List[float]  # the criterion of every restart, in order (consensus for coassociation)
  log_likelihoods: List[float]  # mean per code, of every restart


def consensus(assignments: Sequence[np.ndarray]) -> List[float]:
  """For each partition, its mean adjusted Rand index with every other one (0 if it is alone)."""
  return [float(np.mean([metrics.adjusted_rand_score(assigned, other)
                         for j, other in enumerate(assignments) if j != i]))
          if len(assignments) > 1 else 0.0 for i, assigned in enumerate(assignments)]


@one_blas_thread
def choose_mixture(codes: np.ndarray, num_clusters: int, covariance: str, restarts: int,
                   seed: int, criterion: str, augmented_codes: Sequence[np.ndarray] = ()) -> Choice:
  """Fits `restarts` GMMs (k-means++ starts) to `codes` and keeps the best by `criterion` (or, for
  "coassociation", combines them); "augmentation" needs `augmented_codes` (codes of augmented copies of the images, row for row)."""
  if restarts < 1:
    raise ValueError(f"restarts must be at least 1, got {restarts}.")
  if criterion not in CRITERIA:
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
  if criterion == "augmentation" and not len(augmented_codes):
    raise ValueError("the augmentation criterion needs augmented codes.")
  fits, assignments = [], []
  for restart in range(restarts):
    gmm = mixture.GaussianMixture(num_clusters, covariance_type=covariance, reg_covar=REG_COVAR,
                                  init_params="k-means++", random_state=seed * 1000 + restart)
    fits.append(gmm.fit(codes))
    assignments.append(gmm.predict(codes))
  log_likelihoods = [float(gmm.lower_bound_) for gmm in fits]
  if criterion == "likelihood":
    scores = log_likelihoods
  elif criterion == "augmentation":
    scores = [float(np.mean([np.mean(gmm.predict(view) == assigned) for view in augmented_codes]))
              for gmm, assigned in zip(fits, assignments)]
  else:  # consensus; coassociation logs it too, as a measure of how much the restarts agree
    scores = consensus(assignments)
  for restart, (score, log_likelihood) in enumerate(zip(scores, log_likelihoods)):
    logging.info("GMM restart %d/%d: log-likelihood %.3f, %s %.3f.", restart + 1, restarts,
                 log_likelihood, "consensus" if criterion == "coassociation" else criterion, score)
  if criterion == "coassociation":
    gmm = coassociation_mixture(codes, assignments, num_clusters, covariance, seed)
    return Choice(gmm=gmm, index=-1, scores=scores, log_likelihoods=log_likelihoods)
  index = int(np.argmax(scores))
  return Choice(gmm=fits[index], index=index, scores=scores, log_likelihoods=log_likelihoods)


def coassociation_groups(assignments: Sequence[np.ndarray], num_clusters: int) -> np.ndarray:
  """Average-linkage clustering of 1 − (fraction of partitions that put two examples together)
  into `num_clusters` groups: one label per example."""
  one_hot = np.concatenate([np.eye(num_clusters)[assigned] for assigned in assignments], axis=1)
  together = one_hot @ one_hot.T / len(assignments)
  return cluster.AgglomerativeClustering(num_clusters, metric="precomputed",
                                         linkage="average").fit_predict(1.0 - together)


def coassociation_mixture(codes: np.ndarray, assignments: Sequence[np.ndarray], num_clusters: int,
                          covariance: str, seed: int) -> mixture.GaussianMixture:
  """A GMM started from the moments of the co-association groups (found on at most
  COASSOCIATION_EXAMPLES codes) and refined by EM on all of them."""
  rows = np.random.default_rng(seed).permutation(len(codes))[:COASSOCIATION_EXAMPLES]
  groups = coassociation_groups([assigned[rows] for assigned in assignments], num_clusters)
  return mixture_from_groups(codes, codes[rows], np.eye(num_clusters)[groups], covariance, seed)


@one_blas_thread
def mixture_from_groups(codes: np.ndarray, grouped: np.ndarray, responsibilities: np.ndarray,
                        covariance: str, seed: int, refine: bool = True) -> mixture.GaussianMixture:
  """A GMM whose components start as the weighted moments of the rows of `grouped` under
  `responsibilities` ([rows, K]: one-hot groups, or another model's soft assignments), refined by
  EM on `codes` (with `refine`; else a single EM step from them)."""
  totals = responsibilities.sum(axis=0) + 1e-10
  means = responsibilities.T @ grouped / totals[:, None]
  centred = grouped[None] - means[:, None]  # [K, rows, dim]
  if covariance == "full":
    covariances = (np.einsum("kn,kni,knj->kij", responsibilities.T, centred, centred)
                   / totals[:, None, None] + REG_COVAR * np.eye(codes.shape[1]))
    precisions = np.linalg.inv(covariances)
    precisions = (precisions + precisions.transpose(0, 2, 1)) / 2  # inv's rounding is not symmetric
  else:
    precisions = 1.0 / (np.einsum("kn,kni->ki", responsibilities.T, centred ** 2) / totals[:, None]
                        + REG_COVAR)
  gmm = mixture.GaussianMixture(
      len(totals), covariance_type=covariance, reg_covar=REG_COVAR, random_state=seed,
      weights_init=totals / totals.sum(), means_init=means, precisions_init=precisions,
      max_iter=100 if refine else 1)
  with warnings.catch_warnings():
    if not refine:  # one step is what was asked for, not a failure to converge
      warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
    return gmm.fit(codes)


def umap_embedding(codes: np.ndarray, views: Sequence[np.ndarray], dims: int, seed: int):
  """(UMAP embedding of `codes` in `dims` dimensions, the `views` mapped into it), N2D's settings
  (20 neighbours, min_dist 0: tight groups for a mixture to find). Seeded, so single-threaded and
  reproducible."""
  import umap  # pylint: disable=g-import-not-at-top  (numba compiles at import: only when asked)
  reducer = umap.UMAP(n_components=dims, n_neighbors=min(UMAP_NEIGHBOURS, len(codes) - 1),
                      min_dist=0.0, random_state=seed)
  embedded = reducer.fit_transform(codes)
  return embedded, [reducer.transform(view) for view in views]
