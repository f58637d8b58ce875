"""BM25 as the lexical leg computes it, on cases small enough to check by hand."""

from __future__ import annotations

import math

import pytest

from rag_pipeline.lib.retrieval.lexical import BM25Params, bm25_score, idf


def test_idf_is_the_lucene_variant_and_never_negative() -> None:
    # N = 4 chunks, a term in 1 of them: ln(1 + 3.5 / 1.5).
    assert idf(4, 1) == pytest.approx(math.log(1 + 3.5 / 1.5))
    # A term in every chunk still weighs a little, never less than nothing.
    assert idf(4, 4) == pytest.approx(math.log(1 + 0.5 / 4.5))
    assert idf(4, 4) > 0
    assert idf(1000, 1) > idf(1000, 10) > idf(1000, 500)


def test_score_of_one_term_by_hand() -> None:
    # N=4, df=1, tf=2, length 10, average 5, k1=1.2, b=0.75:
    # norm = 1.2 * (1 - 0.75 + 0.75 * 2) = 2.1; tf part = 2 * 2.2 / (2 + 2.1)
    expected = math.log(1 + 3.5 / 1.5) * (2 * 2.2 / 4.1)
    score = bm25_score({"kafka": 1}, {"kafka": 2, "lag": 1}, 10, 5.0, 4, {"kafka": 1, "lag": 3})
    assert score == pytest.approx(expected)


def test_query_terms_add_up_and_repeat() -> None:
    df = {"vpn": 2, "portal": 1}
    tf = {"vpn": 1, "portal": 1}
    one = bm25_score({"vpn": 1}, tf, 4, 4.0, 10, df)
    other = bm25_score({"portal": 1}, tf, 4, 4.0, 10, df)
    assert bm25_score({"vpn": 1, "portal": 1}, tf, 4, 4.0, 10, df) == pytest.approx(one + other)
    # A term repeated in the query counts twice (as rank-bm25 and Lucene's SHOULD clauses do).
    assert bm25_score({"vpn": 2}, tf, 4, 4.0, 10, df) == pytest.approx(2 * one)
    # Terms absent from the chunk or from the version contribute nothing.
    assert bm25_score({"absent": 3}, tf, 4, 4.0, 10, df) == 0.0


def test_saturation_and_length_normalisation() -> None:
    df = {"quota": 3}
    scores = [bm25_score({"quota": 1}, {"quota": n}, 20, 20.0, 100, df) for n in (1, 2, 4, 100)]
    assert scores == sorted(scores)
    # tf saturates at idf * (k1 + 1).
    assert scores[-1] < idf(100, 3) * 2.2
    short = bm25_score({"quota": 1}, {"quota": 1}, 5, 20.0, 100, df)
    long = bm25_score({"quota": 1}, {"quota": 1}, 80, 20.0, 100, df)
    assert short > long
    # b = 0: no length normalisation at all.
    flat = BM25Params(b=0.0)
    assert bm25_score({"quota": 1}, {"quota": 1}, 5, 20.0, 100, df, flat) == pytest.approx(
        bm25_score({"quota": 1}, {"quota": 1}, 80, 20.0, 100, df, flat)
    )


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="b must be between 0 and 1"):
        BM25Params(b=1.5)
    with pytest.raises(ValueError, match="k1"):
        BM25Params(k1=-1)
