"""RULER offline: the scorers on known values, samples built with the embedded tokenizer at
1K/2K/4K (length, answers at their depth, reproducible), QA from small SQuAD and HotpotQA files
made here, the figure's threshold, and a small run of the embedded model into a folder."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from core.errors import ConfigError
from core.evals import ruler
from core.evals.ruler import RulerConfig, expand_tasks, falls_under, mean_by_length, score_table
from core.evals.scoring import Scorer, match_all, match_part, ruler_match
from core.models.generation import prompt_ids

# ---------------------------------------------------------------------------------------------
# Scorers (exact values).


def test_ruler_all_match_is_the_share_of_answers_found_case_insensitive():
    assert ruler_match("The numbers are 123 and 456.", [["123"], ["456"]]) == 1.0
    assert ruler_match("It is 123.", [["123"], ["456"], ["789"], ["000"]]) == 0.25
    assert ruler_match("QWERT, asdfg", [["qwert"], ["ASDFG"]]) == 1.0
    assert ruler_match("", [["1"]]) == 0.0


def test_ruler_part_match_counts_any_alternative():
    assert ruler_match("Paris, France", [["paris", "City of Light"]]) == 1.0
    assert ruler_match("London", [["paris", "City of Light"]]) == 0.0
    assert match_part("only b here", ["a", "b"]) == 1.0
    assert match_all("only b here", ["a", "b"]) == 0.5
    assert match_all("a and b", [["a", "x"], ["b"]]) == 2 / 3


def test_scorer_kinds_score_groups_and_strings():
    assert Scorer("ruler").score("VAR AB", [["ab"], ["cd"]]) == {"score": 0.5}
    assert Scorer("match_part").score("x cd", [["ab"], ["cd"]]) == {"score": 1.0}
    # A text scorer reads the first alternative of each group as the expected answer.
    assert Scorer("exact").score("the value is 42", [["42"]]) == {"score": 1.0}


def test_task_names_and_groups_expand_in_ruler_order():
    assert expand_tasks("vt,niah_single") == [
        "niah_single_1",
        "niah_single_2",
        "niah_single_3",
        "vt",
    ]
    assert len(expand_tasks(["synthetic"])) == 11
    with pytest.raises(ConfigError, match="unknown RULER tasks: nope"):
        expand_tasks("nope")
    with pytest.raises(ConfigError, match="qa_squad needs a squad file"):
        RulerConfig(tasks=["qa_squad"])


def test_the_threshold_marks_where_the_mean_falls_under():
    cells = [
        {"task": "vt", "length": 1000, "score": 1.0},
        {"task": "cwe", "length": 1000, "score": 0.8},
        {"task": "vt", "length": 2000, "score": 1.0},
        {"task": "cwe", "length": 2000, "score": 0.6},
        {"task": "vt", "length": 4000, "score": 0.5},
    ]
    table = score_table(cells)
    assert table == {"vt": {1000: 100.0, 2000: 100.0, 4000: 50.0}, "cwe": {1000: 80.0, 2000: 60.0}}
    means = mean_by_length(table)
    assert means == {1000: 90.0, 2000: 80.0, 4000: 50.0}
    assert falls_under(means, 85.6) == 2000
    assert falls_under(means, 10) is None
    fig = ruler.figure({"m": cells}, 85.6)
    assert "under 85.6 from 2K" in fig.layout.title.text


# ---------------------------------------------------------------------------------------------
# Samples with the embedded tokenizer.

LENGTHS = [1000, 2000, 4000]


@pytest.fixture(scope="module")
def samples(embedded_tokenizer):
    config = RulerConfig(tasks=["synthetic"], lengths=LENGTHS, samples=2, seed=7)
    return {p.key: p for p in config.prompts(embedded_tokenizer)}


def test_every_sample_is_its_length_within_two_percent(samples, embedded_tokenizer):
    assert len(samples) == 11 * 3 * 2
    for key, p in samples.items():
        target = p.info["length"]
        assert abs(len(p.ids) - target) <= 0.02 * target, key
        assert len(p.ids) == p.info["prompt_tokens"]
        # The same prompt rendered again from its messages by the chat template (how an
        # endpoint sees it: the answer prefix as a last assistant message it continues) is
        # just as long.
        assert p.messages[-1] == {"role": "assistant", "content": p.info["answer_prefix"]}
        again = len(
            prompt_ids(
                embedded_tokenizer,
                p.messages,
                add_generation_prompt=False,
                continue_final_message=True,
            )
        )
        assert abs(again - target) <= 0.02 * target, key


def test_needles_sit_at_their_stated_depths(samples, embedded_tokenizer):
    for key, p in samples.items():
        if "needles" not in p.info:
            continue
        start, hay = p.info["context_start"], p.info["haystack_tokens"]
        for needle, at, stated, actual in zip(
            p.info["needles"],
            p.info["needle_tokens"],
            p.info["depths"],
            p.info["actual_depths"],
            strict=True,
        ):
            text = embedded_tokenizer.decode(p.ids[start + at : start + at + 120])
            assert text.strip().startswith(needle), (key, text[:80])
            # The nearest piece boundary: within a sentence (or list item) of 60 tokens.
            assert abs(actual - stated) <= 100 * 60 / hay, (key, stated, actual)
            if p.info["task"] in ("niah_single_1", "vt"):  # short filler sentences
                assert abs(actual - stated) <= 1.5, (key, stated, actual)
        for group in p.info["expected"]:
            assert group[0] in p.messages[0]["content"], key


def test_word_tasks_make_the_expected_words_the_most_frequent(samples):
    for key, p in samples.items():
        if p.info["task"] not in ("cwe", "fwe"):
            continue
        context = p.messages[0]["content"].split("\n\n")[-2]  # after cwe's worked example
        words = [w for w in context.split() if not w.rstrip(".").isdigit()]
        counts = Counter(words)
        top = {w for w, _ in counts.most_common(len(p.info["expected"]))}
        assert top == {g[0] for g in p.info["expected"]}, key
        assert counts.most_common()[len(top)][1] < min(counts[w] for w in top), key


def test_cwe_and_vt_come_after_one_solved_instance_unless_turned_off(samples, embedded_tokenizer):
    for key, p in samples.items():
        task, content = p.info["task"], p.messages[0]["content"]
        if task not in ("cwe", "vt"):
            assert p.info["answer_prefix"] not in content  # no solved instance before it
            continue
        # The example: the task's instruction, its context, question and answer, then the
        # sample itself with the same instruction; the example answers other words or names.
        instruction = content.split("\n\n")[0]
        assert content.count(instruction) == 2, key
        example, real = content.split(instruction)[1:]
        stem = p.info["answer_prefix"].split(" ")[:2]  # "The 10" / "The variables"
        answer = example.split(" ".join(stem))[-1]
        assert answer.count(",") >= 4, (key, answer)  # 5 names or 10 words, with its answer
        assert not any(g[0] in answer for g in p.info["expected"]), key
        assert all(g[0] in real for g in p.info["expected"]), key
    # Without the example the same samples are shorter in frame, as long in tokens.
    plain = RulerConfig(tasks=["cwe", "vt"], lengths=[2000], samples=1, seed=7, examples=False)
    for p in plain.prompts(embedded_tokenizer):
        content = p.messages[0]["content"]
        assert content.count(content.split("\n\n")[0]) == 1
        assert abs(len(p.ids) - 2000) <= 40
        assert p.info["expected"] == samples[p.key].info["expected"]


def test_the_same_seed_gives_the_same_set(samples, embedded_tokenizer):
    again = RulerConfig(tasks=["synthetic"], lengths=[1000], samples=2, seed=7)
    for p in again.prompts(embedded_tokenizer):
        assert p.ids == samples[p.key].ids and p.info == samples[p.key].info
    other = RulerConfig(tasks=["niah_single_2"], lengths=[1000], samples=2, seed=8)
    assert [p.ids for p in other.prompts(embedded_tokenizer)] != [
        samples[k].ids for k in ("niah_single_2-L1000-S0", "niah_single_2-L1000-S1")
    ]
    # A resumed run builds only the missing samples, and they are the same ones.
    skip = {"vt-L1000-S0"}
    rest = {
        p.key: p.ids
        for p in RulerConfig(tasks=["vt"], lengths=[1000], samples=2, seed=7).prompts(
            embedded_tokenizer, skip
        )
    }
    assert rest == {"vt-L1000-S1": samples["vt-L1000-S1"].ids}


# ---------------------------------------------------------------------------------------------
# QA on files made here.

WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()


def _paragraph(i: int) -> str:
    filler = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(50))
    return f"Town {i} has {i * 7 + 3} bridges. {filler.capitalize()}."


def test_qa_tasks_hide_the_gold_document_among_distractors(tmp_path, embedded_tokenizer):
    squad = {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": _paragraph(i),
                        "qas": [
                            {
                                "id": str(i),
                                "question": f"How many bridges has Town {i}?",
                                "answers": [{"text": str(i * 7 + 3)}],
                            }
                        ],
                    }
                    for i in range(60)
                ],
            }
        ]
    }
    hotpot = [
        {
            "question": f"How many bridges has Town {i}?",
            "answer": str(i * 7 + 3),
            "supporting_facts": [[f"Town {i}", 0]],
            "context": [[f"Town {i}", [_paragraph(i)]], [f"Other {i}", [_paragraph(i + 100)]]],
        }
        for i in range(60)
    ]
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    (tmp_path / "hotpot.json").write_text(json.dumps(hotpot))
    config = RulerConfig(
        tasks=["qa"],
        lengths=[1000, 2000],
        samples=3,
        squad=str(tmp_path / "squad.json"),
        hotpot=str(tmp_path / "hotpot.json"),
    )
    prompts = list(config.prompts(embedded_tokenizer))
    assert len(prompts) == 12
    for p in prompts:
        assert abs(len(p.ids) - p.info["length"]) <= 0.02 * p.info["length"], p.key
        town = p.info["question"].split("Town ")[1].rstrip("?")
        content = p.messages[0]["content"]
        assert _paragraph(int(town)) in content and p.info["expected"][0][0] in content
        start = p.info["context_start"] + p.info["needle_tokens"][0]
        assert "Town " + town in embedded_tokenizer.decode(p.ids[start : start + 20])


# ---------------------------------------------------------------------------------------------
# A small run of the embedded model.


@pytest.mark.integration
def test_a_small_run_fills_an_evaluation_folder_and_resumes(embedded, tmp_path, one_torch_thread):
    from core.evals.backends import LocalBackend, Target
    from core.evals.runner import Evaluation, compare_figure, folder_figure
    from core.models.loader import ModelSpec

    config = RulerConfig(tasks=["niah_single_1", "vt"], lengths=[512], samples=1, max_new_tokens=24)
    backend = LocalBackend(embedded)
    evaluation = Evaluation(config, Target(ModelSpec()), out=tmp_path / "r", backend=backend)
    cells = evaluation.run_all()
    assert [c["key"] for c in cells] == config.cell_keys()
    for cell in cells:
        assert 0.0 <= cell["score"] <= 1.0 and cell["task"] in ("niah_single_1", "vt")
        assert abs(cell["prompt_tokens"] - 512) <= 10
    # The embedded model finds a single number in filler text at 512 tokens.
    needle = [c for c in cells if c["task"] == "niah_single_1"]
    assert needle[0]["score"] == 1.0, needle[0]["answer"]
    assert {"config.json", "cells.jsonl", "heatmap.html"} <= {
        p.name for p in (tmp_path / "r").iterdir()
    }
    reopened = Evaluation.open(tmp_path / "r", backend=backend)
    assert reopened.pending() == [] and list(reopened.run()) == []
    assert "RULER" in folder_figure(tmp_path / "r").layout.title.text
    assert len(compare_figure(tmp_path / "r", tmp_path / "r").data) == 2


def test_the_command_line_round_trips_a_ruler_config(tmp_path):
    from core.cli.evals import command_for, task_from_args
    from core.cli.main import build_parser
    from core.evals.backends import Target
    from core.models.loader import ModelSpec

    config = RulerConfig(
        tasks="vt,niah_multikey",
        lengths=[1000, 4000],
        samples=3,
        seed=2,
        haystack="noise",
        answer_prefix=False,
        threshold=70,
    )
    argv = command_for(config, Target(ModelSpec()), out=str(tmp_path))
    assert argv[:2] == ["longctx", "ruler"] and "--no-answer-prefix" in argv
    assert argv[argv.index("--tasks") + 1] == "niah_multikey_1,niah_multikey_2,niah_multikey_3,vt"
    args = build_parser().parse_args(argv[1:])
    assert task_from_args(args) == config
    short = build_parser().parse_args(["ruler", "--tasks", "cwe", "--lengths", "2k", "--n", "5"])
    assert task_from_args(short) == RulerConfig(tasks=["cwe"], lengths=[2000], samples=5)
