"""Choosing the Gaussian mixture that initialises the prior after the warm-up.

GMMs fitted to the warm-up codes from different starts reach almost the same likelihood but split
the images very differently. The fits whose assignments survive augmentation of the images (the
consistency the objective asks of q(c|x)) are the ones that cluster well, so several fits are made
and the most augmentation-stable one is kept. No labels are involved.
"""
import dataclasses
from typing import List, Sequence

from absl import logging
import numpy as np
from sklearn import mixture


@dataclasses.dataclass
class Choice:
  gmm: mixture.GaussianMixture
  agreement: float  # fraction of augmented images assigned like their originals
  agreements: List[float]  # of every restart, in order
  log_likelihoods: List[float]  # mean per code, of every restart


def fit_stable_mixture(codes: np.ndarray, augmented_codes: Sequence[np.ndarray], num_clusters: int,
                       covariance: str, restarts: int, seed: int) -> Choice:
  """Fits `restarts` GMMs (k-means++ starts) to `codes` and returns the one whose assignments of
  `augmented_codes` (codes of augmented copies of the same images, row for row) agree most with
  its assignments of `codes`; with no augmented codes, the one of highest likelihood."""
  if restarts < 1:
    raise ValueError(f"restarts must be at least 1, got {restarts}.")
  best, agreements, log_likelihoods = None, [], []
  for restart in range(restarts):
    gmm = mixture.GaussianMixture(num_clusters, covariance_type=covariance, reg_covar=1e-4,
                                  init_params="k-means++", random_state=seed * 1000 + restart)
    gmm.fit(codes)
    assigned = gmm.predict(codes)
    agreement = float(np.mean([np.mean(gmm.predict(view) == assigned) for view in augmented_codes])
                      if len(augmented_codes) else np.nan)
    agreements.append(agreement)
    log_likelihoods.append(float(gmm.lower_bound_))
    score = agreement if len(augmented_codes) else gmm.lower_bound_
    logging.info("GMM restart %d/%d: log-likelihood %.3f, augmentation agreement %.3f.",
                 restart + 1, restarts, gmm.lower_bound_, agreement)
    if best is None or score > best[0]:
      best = (score, gmm, agreement)
  return Choice(gmm=best[1], agreement=best[2], agreements=agreements,
                log_likelihoods=log_likelihoods)
