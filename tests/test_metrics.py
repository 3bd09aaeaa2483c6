"""Ranking metrics on cases small enough to compute by hand."""
import math

import numpy as np
import pytest

from crossmodal.train.metrics import average_precision, ndcg_at_k, precision_at_k, recall_at_k, summarize

RANKING = np.array([1, 0, 1, 0, 0])  # hits at ranks 1 and 3; 3 relevant items exist


def test_precision_counts_hits_in_the_first_k():
    assert precision_at_k(RANKING, 1) == 1.0
    assert precision_at_k(RANKING, 2) == 0.5
    assert precision_at_k(RANKING, 5) == pytest.approx(2 / 5)


def test_precision_treats_missing_slots_as_misses():
    assert precision_at_k(np.array([1, 1]), 10) == pytest.approx(0.2)


def test_recall_divides_by_all_relevant_items():
    assert recall_at_k(RANKING, 1, 3) == pytest.approx(1 / 3)
    assert recall_at_k(RANKING, 5, 3) == pytest.approx(2 / 3)
    assert recall_at_k(np.array([0, 0]), 2, 0) == 0.0


def test_ndcg_uses_log2_discounts_and_ideal_ordering():
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    ideal = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(RANKING, 5, 3) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(np.array([1, 1, 0]), 3, 2) == pytest.approx(1.0)
    assert ndcg_at_k(np.array([0, 1]), 2, 1) == pytest.approx(1 / math.log2(3))


def test_average_precision_counts_unretrieved_relevant_items_as_zero():
    assert average_precision(RANKING, 3) == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert average_precision(np.array([0, 1, 1]), 2) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert average_precision(np.array([0, 0]), 0) == 0.0


def test_summarize_averages_over_queries():
    out = summarize([np.array([1, 0]), np.array([0, 1])], [1, 2], ks=(1, 2))
    assert out["queries"] == 2
    assert out["P@1"] == pytest.approx(0.5)
    assert out["P@2"] == pytest.approx(0.5)
    assert out["R@2"] == pytest.approx((1 + 0.5) / 2)
    assert out["mAP"] == pytest.approx((1.0 + 0.5 / 2) / 2)


def test_invalid_inputs_are_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="relevance"):
        precision_at_k(np.array([0.5, 1]), 1)
    with pytest.raises(ValueError, match="k"):
        precision_at_k(RANKING, 0)
    with pytest.raises(ValueError, match="n_relevant"):
        summarize([RANKING], [1, 2])
