"""Cluster-to-class matching on constructed examples."""
import numpy as np
import pytest

from vaeclust.lib import metrics


def test_hungarian_accuracy_is_one_for_any_relabelling():
  labels = np.repeat(np.arange(5), 20)
  permutation = np.array([3, 0, 4, 1, 2])
  assert metrics.hungarian_accuracy(labels, permutation[labels]) == 1.0
  s = metrics.scores(labels, permutation[labels])
  assert s["nmi"] == pytest.approx(1.0) and s["ari"] == pytest.approx(1.0)


def test_hungarian_accuracy_counts_the_best_one_to_one_map():
  labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
  clusters = np.array([1, 1, 0, 0, 0, 0, 2, 2, 2])
  # best map: 1→0, 0→1, 2→2 → 2 + 3 + 3 correct
  assert metrics.hungarian_accuracy(labels, clusters) == pytest.approx(8 / 9)


def test_merged_clusters_cost_accuracy_but_not_many_to_one():
  labels = np.array([0, 0, 1, 1, 2, 2])
  clusters = np.array([0, 0, 0, 0, 1, 1])
  assert metrics.hungarian_accuracy(labels, clusters) == pytest.approx(4 / 6)


def test_over_clustering_gives_each_class_that_many_clusters():
  labels = np.repeat([0, 1], 4)
  clusters = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # each class split in two clusters
  assert metrics.hungarian_accuracy(labels, clusters, over=1) == pytest.approx(0.5)
  assert metrics.hungarian_accuracy(labels, clusters, over=2) == 1.0
  assert metrics.many_to_one_accuracy(labels, clusters) == 1.0


def test_unlabelled_examples_are_ignored_and_no_labels_give_nulls():
  labels = np.array([0, 0, 1, 1, -1, -1])
  clusters = np.array([1, 1, 0, 0, 0, 1])
  assert metrics.hungarian_accuracy(labels, clusters) == 1.0
  assert metrics.scores(None, clusters)["acc"] is None
  assert metrics.scores(np.full(6, -1), clusters)["nmi"] is None


def test_matched_classes_name_each_cluster_and_leave_extra_clusters_unmatched():
  labels = np.repeat([0, 1, 2], 4)
  clusters = np.array([2, 2, 2, 2, 0, 0, 0, 3, 1, 1, 1, 1])
  counts = metrics.contingency(labels, clusters, num_clusters=5)
  assert counts.shape == (3, 5)  # cluster 4 is empty but has its column
  np.testing.assert_array_equal(metrics.matched_classes(counts), [1, 2, 0, -1, -1])
  # two clusters per class: cluster 3 joins class 1
  np.testing.assert_array_equal(metrics.matched_classes(counts, over=2)[:4], [1, 2, 0, 1])
