"""The short-context check: MMLU, 0-shot, scored by the likelihood of each answer letter.

The paper measures what the context extension costs with MMLU (64.44 tuned vs. 65.91 base).
Here MMLU runs through lm-eval's own task (`mmlu`: the prompt "question / A. .. D. / Answer:",
the letter with the highest likelihood as the answer, accuracy as the metric), from the Hub, or
on a local file of the same shape, for which a task is written that includes lm-eval's own
template and description and changes only where the rows come from. Accuracy is averaged per
subject, then per category (lm-eval's four: STEM, humanities, social sciences, other) as the
mean of its subjects, then overall as the mean of the categories.

This module knows nothing about gradio or argparse.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from pathlib import Path
from typing import Any

from core.errors import LongCtxError

FILE_TASK = "longctx_mmlu_file"
HUB_TASK = "mmlu"
OTHER = "other"


@functools.cache
def categories() -> dict[str, str]:
    """MMLU's subjects and their category, read from lm-eval's task files."""
    import lm_eval
    import yaml

    found = {}
    for path in sorted((_mmlu_dir() / "default").glob("mmlu_*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        tag = str(data.get("tag", ""))
        if data.get("dataset_name") and tag.startswith("mmlu_"):
            found[data["dataset_name"]] = tag.removeprefix("mmlu_").removesuffix("_tasks")
    if not found:
        raise LongCtxError(f"lm-eval {lm_eval.__version__} has no MMLU subjects where expected")
    return found


def _mmlu_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks" / "mmlu"


def write_file_task(file: str | Path, folder: Path) -> Path:
    """A task folder for `--include-path`: lm-eval's MMLU template and description on `file`
    (JSONL or a JSON array of `{"question", "subject", "choices": [4], "answer": 0-3}`, the
    rows of cais/mmlu).

    Raises:
        LongCtxError: the file does not exist.
    """
    file = Path(file).expanduser().resolve()
    if not file.is_file():
        raise LongCtxError(f"MMLU file {file} does not exist")
    template = _mmlu_dir() / "default" / "_default_template_yaml"
    folder.mkdir(parents=True, exist_ok=True)
    # lm-eval writes one task per subject with "...about <subject>."; here one task holds every
    # subject, so the same sentence is rendered from each row's own subject.
    (folder / "mmlu_file.yaml").write_text(
        f"include: {template}\n"
        f"task: {FILE_TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {file}\n"
        "test_split: test\n"
        "fewshot_split: null\n"
        'description: "The following are multiple choice questions (with answers) about '
        "{{subject.replace('_', ' ')}}.\\n\\n\"\n"
    )
    return folder


def subject_of(cell: dict[str, Any]) -> str:
    """The row's own subject (a local file), or the subject of lm-eval's `mmlu_<subject>`."""
    if cell.get("subject"):
        return str(cell["subject"])
    return str(cell.get("task", "")).removeprefix("mmlu_")


def scores(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy in percent: `subjects` (mean of its questions), `categories` (mean of its
    subjects), `overall` (mean of the categories), and `questions` answered."""
    by_subject: dict[str, list[float]] = defaultdict(list)
    for cell in cells:
        if isinstance(cell.get("score"), (int, float)):
            by_subject[subject_of(cell)].append(float(cell["score"]))
    subjects = {s: 100 * sum(v) / len(v) for s, v in sorted(by_subject.items())}
    known = categories()
    by_category: dict[str, list[float]] = defaultdict(list)
    for subject, value in subjects.items():
        by_category[known.get(subject, OTHER)].append(value)
    cats = {c: sum(v) / len(v) for c, v in sorted(by_category.items())}
    overall = sum(cats.values()) / len(cats) if cats else None
    return {
        "subjects": subjects,
        "categories": cats,
        "overall": overall,
        "questions": sum(len(v) for v in by_subject.values()),
    }
