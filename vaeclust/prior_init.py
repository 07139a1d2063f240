"""Choosing the Gaussian mixture that initialises the prior after the warm-up.

GMMs fitted to the warm-up codes from different starts reach almost the same likelihood but split
the images very differently, and the split they start from shapes what VC training ends with. So
several fits are made and one is kept by a label-free criterion:
- "augmentation": the fit whose assignments of augmented copies of the images agree most with
  its assignments of the originals (the consistency the objective asks of q(c|x));
- "consensus": the fit whose assignments agree most (mean adjusted Rand index) with the other
  fits' — the medoid of the restarts, a split that many starts find rather than an outlier;
- "likelihood": the fit of highest likelihood (what scikit-learn's n_init keeps).
"""
import dataclasses
from typing import List, Sequence

from absl import logging
import numpy as np
from sklearn import metrics
from sklearn import mixture

CRITERIA = ("augmentation", "consensus", "likelihood")


@dataclasses.dataclass
class Choice:
  gmm: mixture.GaussianMixture
  index: int  # of the kept restart
  scores: List[float]  # the criterion of every restart, in order
  log_likelihoods: List[float]  # mean per code, of every restart


def consensus(assignments: Sequence[np.ndarray]) -> List[float]:
  """For each partition, its mean adjusted Rand index with every other one (0 if it is alone)."""
  return [float(np.mean([metrics.adjusted_rand_score(assigned, other)
                         for j, other in enumerate(assignments) if j != i]))
          if len(assignments) > 1 else 0.0 for i, assigned in enumerate(assignments)]


def choose_mixture(codes: np.ndarray, num_clusters: int, covariance: str, restarts: int,
                   seed: int, criterion: str, augmented_codes: Sequence[np.ndarray] = ()) -> Choice:
  """Fits `restarts` GMMs (k-means++ starts) to `codes` and keeps the best by `criterion`;
  "augmentation" needs `augmented_codes` (codes of augmented copies of the images, row for row)."""
  if restarts < 1:
    raise ValueError(f"restarts must be at least 1, got {restarts}.")
  if criterion not in CRITERIA:
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
  if criterion == "augmentation" and not len(augmented_codes):
    raise ValueError("the augmentation criterion needs augmented codes.")
  fits, assignments = [], []
  for restart in range(restarts):
    gmm = mixture.GaussianMixture(num_clusters, covariance_type=covariance, reg_covar=1e-4,
                                  init_params="k-means++", random_state=seed * 1000 + restart)
    fits.append(gmm.fit(codes))
    assignments.append(gmm.predict(codes))
  log_likelihoods = [float(gmm.lower_bound_) for gmm in fits]
  if criterion == "likelihood":
    scores = log_likelihoods
  elif criterion == "augmentation":
    scores = [float(np.mean([np.mean(gmm.predict(view) == assigned) for view in augmented_codes]))
              for gmm, assigned in zip(fits, assignments)]
  else:
    scores = consensus(assignments)
  for restart, (score, log_likelihood) in enumerate(zip(scores, log_likelihoods)):
    logging.info("GMM restart %d/%d: log-likelihood %.3f, %s %.3f.", restart + 1, restarts,
                 log_likelihood, criterion, score)
  index = int(np.argmax(scores))
  return Choice(gmm=fits[index], index=index, scores=scores, log_likelihoods=log_likelihoods)
