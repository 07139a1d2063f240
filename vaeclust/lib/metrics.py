"""Clustering scores against ground truth: Hungarian-matched and many-to-one accuracy, NMI, ARI.

Cluster ids are arbitrary, so accuracy needs a cluster→class map. Hungarian matching (scipy) finds
the one-to-one map with most agreement; with over-clustering each class may take `over` clusters
(ground-truth rows repeated `over` times before matching). Many-to-one maps each cluster to its
majority class, which rewards over-clustering and is reported as a separate number.
"""
from typing import Dict, Optional

import numpy as np
from scipy import optimize
from sklearn import metrics as sk_metrics


def contingency(labels: np.ndarray, clusters: np.ndarray, num_classes: int = 0,
                num_clusters: int = 0) -> np.ndarray:
  """counts[class, cluster] over examples with a known label (label >= 0); at least
  num_classes × num_clusters (empty rows and columns included)."""
  labels, clusters = np.asarray(labels), np.asarray(clusters)
  known = labels >= 0
  labels, clusters = labels[known], clusters[known]
  counts = np.zeros((max(num_classes, labels.max() + 1 if labels.size else 0),
                     max(num_clusters, clusters.max() + 1 if clusters.size else 0)), np.int64)
  np.add.at(counts, (labels, clusters), 1)
  return counts


def matched_classes(counts: np.ndarray, over: int = 1) -> np.ndarray:
  """The class Hungarian matching gives each cluster (each class at most `over` clusters; −1 for
  a cluster left without one) from counts[class, cluster]."""
  rows = np.repeat(counts, over, axis=0)
  matched_rows, matched_cols = optimize.linear_sum_assignment(rows, maximize=True)
  matched = np.full(counts.shape[1], -1, np.int64)
  matched[matched_cols] = matched_rows // over
  return matched


def hungarian_accuracy(labels: np.ndarray, clusters: np.ndarray, over: int = 1) -> float:
  """Accuracy under the best assignment giving each class at most `over` clusters."""
  counts = contingency(labels, clusters)
  if counts.sum() == 0:
    return float("nan")
  matched = matched_classes(counts, over)
  columns = np.flatnonzero(matched >= 0)
  return float(counts[matched[columns], columns].sum() / counts.sum())


def many_to_one_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
  """Accuracy when every cluster is mapped to its most frequent class."""
  counts = contingency(labels, clusters)
  if counts.sum() == 0:
    return float("nan")
  return float(counts.max(axis=0).sum() / counts.sum())


def scores(labels: Optional[np.ndarray], clusters: np.ndarray, over: int = 1) -> Dict[str, Optional[float]]:
  """acc / nmi / ari (and many_to_one_acc); None for each where no example has a label.

  NMI is scikit-learn's default (arithmetic-mean normalisation).
  """
  if labels is None or not np.any(np.asarray(labels) >= 0):
    return {"acc": None, "nmi": None, "ari": None, "many_to_one_acc": None}
  labels, clusters = np.asarray(labels), np.asarray(clusters)
  known = labels >= 0
  return {
      "acc": hungarian_accuracy(labels, clusters, over),
      "nmi": float(sk_metrics.normalized_mutual_info_score(labels[known], clusters[known])),
      "ari": float(sk_metrics.adjusted_rand_score(labels[known], clusters[known])),
      "many_to_one_acc": many_to_one_accuracy(labels, clusters),
  }
