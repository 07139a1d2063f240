"""Choosing the number of clusters K without labels (--num_clusters=auto), on the warm-up codes.

The prior is initialised from a Gaussian mixture fitted to those codes, so K is chosen the same
way the mixture is fitted: for each candidate K, GMMs of the prior's covariance type from a few
k-means++ starts, scored by the Bayesian information criterion (−2 log-likelihood + parameters ·
log N; lower is better) of the best of them. A component more must explain enough of the codes to
pay for its parameters.
"""
import dataclasses
from typing import Iterable, List

from absl import logging
import numpy as np
from sklearn import mixture

from vaeclust import prior_init

RESTARTS = 3  # GMM starts per candidate K; the lowest BIC counts


@dataclasses.dataclass
class Choice:
  num_clusters: int
  candidates: List[int]
  scores: List[float]  # BIC of each candidate, in order


@prior_init.one_blas_thread
def bic_curve(codes: np.ndarray, candidates: Iterable[int], covariance: str, seed: int) -> List[float]:
  """The lowest BIC of RESTARTS GMM fits to `codes` for each candidate K."""
  scores = []
  for k in candidates:
    fits = [mixture.GaussianMixture(k, covariance_type=covariance, reg_covar=prior_init.REG_COVAR,
                                    init_params="k-means++", random_state=seed * 1000 + restart)
            .fit(codes) for restart in range(RESTARTS)]
    scores.append(float(min(gmm.bic(codes) for gmm in fits)))
    logging.info("K = %d: BIC %.1f.", k, scores[-1])
  return scores


def choose(codes: np.ndarray, candidates: Iterable[int], covariance: str, seed: int) -> Choice:
  """The candidate K of lowest BIC (see bic_curve)."""
  candidates = [int(k) for k in candidates]
  if not candidates or min(candidates) < 1:
    raise ValueError(f"candidates must be positive numbers of clusters, got {candidates}.")
  if max(candidates) > len(codes):
    raise ValueError(f"{len(codes)} codes cannot be split into {max(candidates)} clusters.")
  scores = bic_curve(codes, candidates, covariance, seed)
  return Choice(num_clusters=candidates[int(np.argmin(scores))], candidates=candidates,
                scores=scores)
