"""Scorers with exact values; the judge's grade parsing; scorer validation."""

from __future__ import annotations

import pytest

from core.errors import ConfigError, LongCtxError
from core.evals.niah import DEFAULT_ANSWER, DEFAULT_NEEDLE
from core.evals.scoring import (
    Scorer,
    exact_match,
    keyword_recall,
    parse_grade,
    rouge_l_f1,
    rouge_l_recall,
    substring_match,
    words,
)


def test_words_ignore_case_and_punctuation():
    assert words("Eat a sandwich, in Dolores Park!") == [
        "eat",
        "a",
        "sandwich",
        "in",
        "dolores",
        "park",
    ]
    assert words("It's 12,345.") == ["it's", "12", "345"]


def test_rouge_l_recall_of_the_default_answer():
    assert rouge_l_recall(DEFAULT_NEEDLE, DEFAULT_ANSWER) == 1.0
    assert rouge_l_recall("", DEFAULT_ANSWER) == 0.0
    # 12 reference words; "eat a sandwich on a sunny day" keeps 7 of them, in order
    assert rouge_l_recall("Eat a sandwich on a sunny day.", DEFAULT_ANSWER) == 7 / 12
    # order matters for ROUGE-L, not for keywords
    assert rouge_l_recall("park dolores", "Dolores Park") == 0.5
    assert keyword_recall("park dolores", "Dolores Park") == 1.0


def test_rouge_l_f1_against_the_whole_needle():
    assert rouge_l_f1(DEFAULT_NEEDLE, DEFAULT_NEEDLE) == 1.0
    assert rouge_l_f1("", DEFAULT_NEEDLE) == 0.0 and rouge_l_f1("anything", "") == 0.0
    # The needle has 21 words; the bare answer keeps 12 of them in order and adds none:
    # precision 1, recall 12/21, F1 = 2PR / (P + R) = 24/33.
    assert rouge_l_f1(DEFAULT_ANSWER, DEFAULT_NEEDLE) == pytest.approx(24 / 33)
    assert rouge_l_recall(DEFAULT_ANSWER, DEFAULT_NEEDLE) == pytest.approx(12 / 21)
    # Extra words cost under F1, not under recall: 21 of 23 words, all 21 needle words.
    chatty = DEFAULT_NEEDLE + " Enjoy it!"
    assert rouge_l_f1(chatty, DEFAULT_NEEDLE) == pytest.approx(42 / 44)
    assert rouge_l_recall(chatty, DEFAULT_NEEDLE) == 1.0
    assert Scorer("rouge_l_f1").score(DEFAULT_ANSWER, DEFAULT_NEEDLE) == {"score": 0.7273}


def test_substring_match_ignores_case_only():
    assert substring_match("The first topic was The Role of Art.", "the role of art") == 1.0
    assert substring_match("the ROLE of art", " The role of art ") == 1.0
    assert substring_match("Role of art", "the role of art") == 0.0
    assert substring_match("the role-of art", "the role of art") == 0.0  # punctuation counts
    assert substring_match("anything", "") == 0.0
    assert Scorer("substring").score("It was Cooking.", "cooking") == {"score": 1.0}


def test_keyword_recall_skips_stopwords():
    # content words of the default answer: eat sandwich sit dolores park sunny day (7)
    assert keyword_recall("Go to Dolores Park on a sunny day.", DEFAULT_ANSWER) == 4 / 7
    assert keyword_recall("the a of", "the a of") == 1.0  # all stopwords: plain words count


def test_exact_match_needs_the_whole_answer_in_order():
    assert exact_match("The pass key is 71432.", "71432") == 1.0
    assert exact_match("The pass key is 714320.", "71432") == 0.0
    assert exact_match(DEFAULT_NEEDLE, DEFAULT_ANSWER) == 1.0
    assert exact_match("Eat a sandwich.", DEFAULT_ANSWER) == 0.0
    assert exact_match("anything", "") == 0.0


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        ("7", 7),
        ("Grade: 10", 10),
        ("10/10", 10),
        ("I'd say 3.", 3),
        (" 1\n", 1),
        ("9 out of 10", 9),
    ],
)
def test_judge_grade_is_the_first_whole_number(reply, grade):
    assert parse_grade(reply) == grade


def test_judge_reply_without_a_grade_is_an_error():
    for reply in ("excellent", "0", "11", "2.5"):
        with pytest.raises(LongCtxError, match="without a 1-10 grade"):
            parse_grade(reply)


def test_scorer_scores_in_zero_one():
    assert Scorer("rouge_l").score(DEFAULT_NEEDLE, DEFAULT_ANSWER) == {"score": 1.0}
    assert Scorer("exact").score("no", "yes") == {"score": 0.0}
    assert Scorer("keywords").score("dolores", "Dolores Park") == {"score": 0.5}


def test_scorer_validation():
    with pytest.raises(ConfigError, match="scorer must be one of"):
        Scorer("bleu")
    with pytest.raises(ConfigError, match="judge scorer needs an endpoint"):
        Scorer("judge")
    with pytest.raises(ConfigError) as info:
        Scorer("judge", {"base_url": "localhost:8000", "model": ""})
    assert len(info.value.problems) == 2
    judge = Scorer("judge", {"base_url": "http://127.0.0.1:9/v1/", "model": "m", "api_key": "sk"})
    assert judge.public() == {
        "kind": "judge",
        "judge": {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
    }


def test_the_scorer_reads_the_answer_prefix_and_the_continuation_as_one_answer():
    from core.evals.backends import full_answer

    assert full_answer("The pass key is", " 12345.") == "The pass key is 12345."
    assert full_answer("The pass key is", "12345") == "The pass key is 12345"  # no glued words
    assert full_answer("The pass key is", ": 12345") == "The pass key is: 12345"
    assert full_answer("", "  Paris.\n") == "Paris."
    assert full_answer("The key is", "") == "The key is"
    assert exact_match(full_answer("The pass key is", "12345."), "12345") == 1.0
