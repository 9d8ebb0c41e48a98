"""The paper's evaluations: LongChat's topic-retrieval files read, checked and sent as one user
turn (embedded tokenizer, no weights), then the `paper` NIAH preset and a LongChat file run
through the `longctx` command on the tiny random Llama (real forward passes, seconds)."""

from __future__ import annotations

import json

import pytest

from core.cli.main import main
from core.errors import ConfigError
from core.evals import results
from core.evals.niah import DEFAULT_NEEDLE, PAPER_TEMPLATE, WHOLE_NEEDLE
from core.evals.retrieval import TopicsConfig
from core.evals.scoring import rouge_l_f1, substring_match
from core.evals.topic_file import read_topic_file

# Rows in the two shapes LongChat's files come in (our own made-up conversations): the whole
# prompt in `prompt` (LongChat's test cases), or `context` + `question` (the paper's copy).
ROWS = [
    {
        "prompt": "USER: Let us talk about beekeeping. ASSISTANT: Bees need water nearby. "
        "USER: Now tidal pools. ASSISTANT: They hold small crabs. "
        "What is the first topic we discussed? Give only its name.",
        "topics": ["beekeeping", "tidal pools"],
        "prompt_length": 41,
        "num_topics": 2,
    },
    {
        "context": "USER: I want to discuss Knot Tying. ASSISTANT: Start with a bowline. "
        "USER: Next, bread baking. ASSISTANT: Use a hot oven. USER: Then, comets. "
        "ASSISTANT: They have two tails.",
        "question": "Which topic came first?",
        "topics": ["Knot Tying", "bread baking", "comets"],
        "num_topics": 3,
    },
]


def _write(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_a_longchat_file_is_read_in_both_shapes(tmp_path):
    rows = read_topic_file(_write(tmp_path / "t.jsonl", ROWS))
    assert [(r.row, r.num_topics, r.expected, r.prompt_length) for r in rows] == [
        (1, 2, "beekeeping", 41),
        (2, 3, "Knot Tying", None),
    ]
    assert rows[0].text == ROWS[0]["prompt"]
    # The paper's code joins context and question with a space.
    assert rows[1].text == ROWS[1]["context"] + " " + ROWS[1]["question"]
    # A JSON array reads the same; num_topics defaults to the number of topics.
    array = tmp_path / "t.json"
    array.write_text(json.dumps([{k: v for k, v in ROWS[1].items() if k != "num_topics"}]))
    (row,) = read_topic_file(array)
    assert row.num_topics == 3 and row.row == 1


def test_malformed_rows_are_listed_by_line_with_the_field_at_fault(tmp_path):
    path = _write(
        tmp_path / "bad.jsonl",
        [
            ROWS[0],
            {"text": "a conversation", "topics": ["a"]},
            "{not json",
            {"prompt": "p", "topics": []},
            {"context": "c", "question": "", "topics": ["x"]},
            {"prompt": "p", "topics": ["x"], "num_topics": "two"},
        ],
    )
    with pytest.raises(ConfigError) as info:
        read_topic_file(path)
    problems = info.value.problems
    assert len(problems) == 5
    assert problems[0].startswith(f"{path}: line 2: no 'prompt' or 'context'")
    assert "found keys: text, topics" in problems[0]
    assert problems[1].startswith("line 3: not JSON")
    assert problems[2].startswith("line 4: 'topics' must be a non-empty list")
    assert problems[3].startswith("line 5: 'context' without a 'question'")
    assert problems[4].startswith("line 6: 'num_topics' must be a whole number")
    with pytest.raises(ConfigError, match="cannot be read"):
        TopicsConfig(file=str(tmp_path / "missing.jsonl"))


def test_each_row_is_one_user_turn_and_counts_pick_rows(tmp_path):
    from core.models.generation import prompt_ids
    from core.models.tokenizers import load_tokenizer

    tokenizer = load_tokenizer("embedded")
    task = TopicsConfig(file=_write(tmp_path / "t.jsonl", ROWS), n_topics=[])
    assert task.cell_keys() == ["N2-R1", "N3-R2"]
    prompts = list(task.prompts(tokenizer))
    for prompt, row in zip(prompts, read_topic_file(task.file), strict=True):
        assert prompt.messages == [{"role": "user", "content": row.text}]
        assert prompt.ids == prompt_ids(tokenizer, prompt.messages)
        assert prompt.info["expected"] == row.expected and prompt.info["n_topics"] == row.num_topics
    assert TopicsConfig(file=task.file, n_topics=[3]).cell_keys() == ["N3-R2"]
    with pytest.raises(ConfigError, match="no rows of 5 topics"):
        TopicsConfig(file=task.file, n_topics=[5])


@pytest.mark.integration
@pytest.mark.usefixtures("one_torch_thread")
def test_the_paper_niah_preset_runs_and_scores_rouge_l_f1_on_the_whole_needle(
    tmp_path, tiny_llama_dir, capsys
):
    out = tmp_path / "niah-paper"
    argv = ["niah", "--preset", "paper", "--model", str(tiny_llama_dir), "--max-length", "512"]
    assert main([*argv, "--num-lengths", "2", "--max-new-tokens", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "preset paper: " in printed and "differs from the paper" in printed
    record = results.read_config(out)
    assert record["scorer"]["kind"] == "rouge_l_f1"
    task = record["task"]
    assert task["lengths"] == [256, 512] and len(task["depths"]) == 11
    assert task["answer"] == WHOLE_NEEDLE and task["template"] == PAPER_TEMPLATE
    assert task["needle_spacing"] == "blank_lines"
    cells = results.read_cells(out)
    assert len(cells) == 22
    for cell in cells:
        assert cell["expected"] == DEFAULT_NEEDLE
        assert cell["score"] == round(rouge_l_f1(cell["answer"], DEFAULT_NEEDLE), 4)
    assert (out / "heatmap.html").exists()


@pytest.mark.integration
@pytest.mark.usefixtures("one_torch_thread")
def test_a_longchat_file_runs_through_the_command_scored_by_substring(tmp_path, tiny_llama_dir):
    path = _write(tmp_path / "topics.jsonl", ROWS)
    out = tmp_path / "topics"
    # The prefix names the first row's topic (in other case), so that row must score 1 and the
    # other, whose first topic the random model will not write, 0.
    argv = ["topics", "--file", path, "--model", str(tiny_llama_dir), "--out", str(out)]
    assert main([*argv, "--max-new-tokens", "4", "--answer-prefix", "It was BEEKEEPING"]) == 0
    assert results.read_config(out)["scorer"]["kind"] == "substring"
    cells = {c["key"]: c for c in results.read_cells(out)}
    assert sorted(cells) == ["N2-R1", "N3-R2"]
    assert cells["N2-R1"]["score"] == 1.0 and cells["N2-R1"]["expected"] == "beekeeping"
    assert cells["N3-R2"]["score"] == substring_match(cells["N3-R2"]["answer"], "Knot Tying")
    assert cells["N3-R2"]["n_topics"] == 3 and cells["N3-R2"]["row"] == 2
