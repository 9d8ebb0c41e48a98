"""Build a training mixture from several files, hold samples out for evaluation, and push a
file to the Hugging Face Hub.

A mixture is a list of parts, each a file (or `file[N]`) taken whole, as a count of samples, or
as a ratio of the mixture's total; samples are drawn without replacement with a seed, optionally
shuffled together, and written as JSONL (rows from JSONL files keep their exact bytes). Malformed
rows are never mixed in and never silently dropped: the report lists each one with its line.
A hold-out splits one file in two the same way: the questions the model will not train on,
and the rest.

This module knows nothing about tokenizers or the UI.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data import io, schema
from core.data.io import Progress, Source
from core.data.rows import HUB_PREFIX
from core.errors import ConfigError, LongCtxError, first_line

AMOUNT = r"\d+(?:\.\d*)?%?"
"""How many samples: a count (500), a ratio (0.3) or a percentage (30%)."""


def parse_amount(text: str) -> tuple[int | None, float | None]:
    """`500` -> (500, None); `0.3` or `30%` -> (None, 0.3).

    Raises:
        ConfigError: the text is none of these.
    """
    amount = text.strip()
    if not re.fullmatch(AMOUNT, amount):
        raise ConfigError(f"give a count (500), a ratio (0.3) or a percentage (30%), got {text!r}")
    if amount.endswith("%"):
        return None, float(amount[:-1]) / 100
    if "." in amount:
        return None, float(amount)
    return int(amount), None


@dataclass
class MixPart:
    """One input of a mixture."""

    path: str
    """A dataset file or folder; `path[N]` first samples N rows of it."""
    count: int | None = None
    """Take exactly this many samples."""
    ratio: float | None = None
    """Make this share (0..1) of the mixture. Neither count nor ratio: take every valid row."""

    def __post_init__(self) -> None:
        problems = []
        if not str(self.path).strip():
            problems.append("a mixture part has an empty path")
        if self.count is not None and self.ratio is not None:
            problems.append(f"{self.path}: give a count or a ratio, not both")
        if self.count is not None and int(self.count) < 1:
            problems.append(f"{self.path}: count must be at least 1, got {self.count}")
        if self.ratio is not None and not 0 < float(self.ratio) <= 1:
            problems.append(f"{self.path}: ratio must be in (0, 1], got {self.ratio}")
        if problems:
            raise ConfigError(problems)

    @classmethod
    def parse(cls, text: str) -> MixPart:
        """`file`, `file:500` (count), `file:0.3` or `file:30%` (ratio)."""
        match = re.fullmatch(rf"(?P<path>.+):(?P<amount>{AMOUNT})", text.strip())
        if not match:
            return cls(text.strip())
        count, ratio = parse_amount(match["amount"])
        return cls(match["path"], count=count, ratio=ratio)


@dataclass
class MixSpec:
    """A mixture to build. Every field maps to one control of the Data tab's Mix panel."""

    parts: list[MixPart]
    output: str
    """Where to write the mixture (JSONL)."""
    total: int | None = None
    """Mixture size for ratio parts; None: as large as the ratios and files allow."""
    seed: int = 42
    shuffle: bool = True
    """Interleave the parts at random (else part after part)."""

    def __post_init__(self) -> None:
        problems = []
        if not self.parts:
            problems.append("a mixture needs at least one part")
        if not str(self.output).strip():
            problems.append("the mixture needs an output file")
        ratios = sum(p.ratio or 0 for p in self.parts)
        if ratios > 1 + 1e-9:
            problems.append(f"the ratios add up to {ratios:g}, more than 1")
        fixed = [p for p in self.parts if p.ratio is None]
        if ratios >= 1 - 1e-9 and fixed and self.total is None:
            problems.append("ratios add up to 1, leaving no room for parts given as counts")
        if self.total is not None and int(self.total) < 1:
            problems.append(f"total must be at least 1, got {self.total}")
        if problems:
            raise ConfigError(problems)


@dataclass
class PartReport:
    path: str
    rows: int
    valid: int
    taken: int
    malformed: list[schema.Problem] = field(default_factory=list)


@dataclass
class MixReport:
    output: Path
    rows: int
    parts: list[PartReport]
    backup: Path | None = None

    def skipped(self, name: Callable[[str], str] = str) -> list[str]:
        """`file: line N: reason` for every malformed row left out, each file as `name` gives
        it (the UI names them as its pages do, not by the server's path)."""
        return [f"{name(p.path)}: {problem}" for p in self.parts for problem in p.malformed]


def _valid_rows(source: Source, report: PartReport) -> list[int]:
    valid = []
    for row in io.iter_raw(source):
        if row.problems:
            report.malformed += [schema.Problem(row.line, r, source.unit) for r in row.problems]
        else:
            valid.append(row.index)
    return valid


def _amounts(spec: MixSpec, valid: list[list[int]]) -> list[int]:
    """How many samples each part gives."""
    fixed = [
        p.count if p.count is not None else len(v)
        for p, v in zip(spec.parts, valid, strict=True)
        if p.ratio is None
    ]
    ratios = [
        (p.ratio, len(v)) for p, v in zip(spec.parts, valid, strict=True) if p.ratio is not None
    ]
    total = spec.total
    if total is None and ratios:
        left = 1 - sum(r for r, _ in ratios)
        if fixed and left > 1e-9:
            total = round(sum(fixed) / left)
        else:
            total = min(math.floor(n / r + 1e-9) for r, n in ratios)
    amounts, problems = [], []
    for part, rows in zip(spec.parts, valid, strict=True):
        if part.ratio is not None:
            want = round(part.ratio * total)
        else:
            want = part.count if part.count is not None else len(rows)
        if want > len(rows):
            problems.append(
                f"{part.path} has {len(rows)} valid samples but the mixture needs {want}; "
                "lower its count/ratio or the total"
            )
        amounts.append(want)
    if problems:
        raise ConfigError(problems)
    return amounts


def build_mix(spec: MixSpec, *, progress: Progress | None = None) -> MixReport:
    """Read the parts, draw the samples, write the mixture atomically.

    Raises:
        ConfigError: a part has fewer valid samples than asked.
        LongCtxError: a part cannot be opened.
    """
    rng = random.Random(spec.seed)
    sources = [io.open_source(p.path, seed=spec.seed) for p in spec.parts]
    reports = [PartReport(p.path, len(s), 0, 0) for p, s in zip(spec.parts, sources, strict=True)]
    valid = [_valid_rows(s, r) for s, r in zip(sources, reports, strict=True)]
    for report, rows in zip(reports, valid, strict=True):
        report.valid = len(rows)
    amounts = _amounts(spec, valid)
    chosen = []
    for k, (rows, amount) in enumerate(zip(valid, amounts, strict=True)):
        picked = sorted(rng.sample(rows, amount))
        reports[k].taken = amount
        chosen += [(k, i) for i in picked]
    if spec.shuffle:
        rng.shuffle(chosen)
    output = Path(spec.output).expanduser()
    _refuse_overwriting_inputs(sources, [output])
    backup = _write_rows(output, sources, chosen, progress)
    return MixReport(output=output, rows=len(chosen), parts=reports, backup=backup)


def _refuse_overwriting_inputs(sources: list[Source], outputs: list[Path]) -> None:
    inputs = {s.path.resolve() for s in sources if isinstance(s, io._FileSource)}
    for output in outputs:
        if output.resolve() in inputs:
            raise ConfigError(f"the output {output} is also an input; write it elsewhere")
    if len({o.resolve() for o in outputs}) < len(outputs):
        raise ConfigError("the two outputs are the same file; give each its own name")


def _write_rows(
    output: Path, sources: list[Source], chosen: list[tuple[int, int]], progress: Progress | None
) -> Path | None:
    """Write the chosen (source, row) pairs as JSONL, atomically; returns the backup, if any."""
    output.parent.mkdir(parents=True, exist_ok=True)
    existed = output.exists()

    def rows() -> Any:
        for n, (k, i) in enumerate(chosen):
            if progress and n % 256 == 0:
                progress(n, len(chosen))
            source = sources[k]
            raw = source.raw(i) if source.format == "jsonl" else None
            yield (raw if raw is not None else io.dumps(source.row(i).record)) + b"\n"
        if progress:
            progress(len(chosen), len(chosen))

    io.atomic_write(output, rows(), backup=True)
    return io.backup_path(output) if existed else None


@dataclass
class HoldOut:
    """Split one file into a training set and held-out evaluation questions.

    Only chat samples are held out (a text sample has no question to ask); every other valid row
    goes to the training file. Rows keep their order and, from JSONL, their exact bytes.
    """

    path: str
    """The dataset to split."""
    train_output: str
    """Where to write what remains for training (JSONL)."""
    eval_output: str
    """Where to write the held-out samples (JSONL)."""
    count: int | None = None
    """Hold out exactly this many chat samples."""
    ratio: float | None = None
    """Hold out this share (0..1) of the chat samples (rounded, at least one)."""
    seed: int = 42

    def __post_init__(self) -> None:
        problems = []
        if (self.count is None) == (self.ratio is None):
            problems.append("give how many samples to hold out: a count (50) or a share (0.05)")
        if self.count is not None and (int(self.count) < 1 or self.count != int(self.count)):
            problems.append(f"hold out a whole number of samples, at least 1, got {self.count}")
        if self.ratio is not None and not 0 < float(self.ratio) < 1:
            problems.append(f"the held-out ratio must be in (0, 1), got {self.ratio}")
        for name in ("train_output", "eval_output"):
            if not str(getattr(self, name) or "").strip():
                problems.append(f"{name.replace('_', ' ')} is empty")
        if problems:
            raise ConfigError(problems)
        self.count = None if self.count is None else int(self.count)  # a form gives 50.0


@dataclass
class HoldOutReport:
    train: Path
    eval: Path
    train_rows: int
    eval_rows: int
    part: PartReport


def split_names(source: str, folder: Path) -> tuple[Path, Path]:
    """`folder/NAME.train.jsonl` and `folder/NAME.eval.jsonl` for a dataset spec (a path,
    `path[N]` or `hub:org/name`)."""
    name = Path(io.parse_spec(source)[0].removeprefix(HUB_PREFIX).replace(":", "-")).name
    stem = name.split(".")[0] or "dataset"
    return folder / f"{stem}.train.jsonl", folder / f"{stem}.eval.jsonl"


def hold_out(spec: HoldOut, *, progress: Progress | None = None) -> HoldOutReport:
    """Draw the held-out chat samples with the seed; write both files atomically.

    Raises:
        ConfigError: fewer chat samples than asked, or an output that is the input.
        LongCtxError: the file cannot be opened.
    """
    source = io.open_source(spec.path, seed=spec.seed)
    report = PartReport(spec.path, len(source), 0, 0)
    chat, other = [], []
    for row in io.iter_raw(source):
        if row.problems:
            report.malformed += [schema.Problem(row.line, r, source.unit) for r in row.problems]
        else:
            (chat if row.kind == schema.CHAT else other).append(row.index)
    report.valid = len(chat) + len(other)
    want = spec.count if spec.count is not None else max(1, round(spec.ratio * len(chat)))
    if want >= len(chat):
        raise ConfigError(
            f"{spec.path} has {len(chat)} chat samples; holding out {want} would leave none of "
            "them to train on: hold out fewer"
        )
    held = set(random.Random(spec.seed).sample(chat, want))
    report.taken = want
    train_out, eval_out = (Path(p).expanduser() for p in (spec.train_output, spec.eval_output))
    _refuse_overwriting_inputs([source], [train_out, eval_out])
    kept = [(0, i) for i in sorted(chat + other) if i not in held]
    _write_rows(eval_out, [source], [(0, i) for i in sorted(held)], None)
    _write_rows(train_out, [source], kept, progress)
    return HoldOutReport(train_out, eval_out, len(kept), want, report)


def push_to_hub(
    path: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = True,
    path_in_repo: str | None = None,
) -> str:
    """Upload a dataset file to a Hub dataset repo (created if needed); returns its URL.

    Raises:
        LongCtxError: no network, the token was refused, or the upload failed.
    """
    from core.models.names import hub_reachable

    path = Path(path).expanduser()
    if not path.is_file():
        raise LongCtxError(f"no such file to push: {path}")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise ConfigError(f"repo id must look like 'user/name', got {repo_id!r}")
    if not hub_reachable():
        raise LongCtxError(
            "the Hugging Face Hub cannot be reached from this machine; push from a connected one "
            "(longctx data push FILE REPO)"
        )
    from huggingface_hub import HfApi

    api = HfApi(token=token or None)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_file(
            path_or_fileobj=str(path),
            path_in_repo=path_in_repo or path.name,
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=f"Add {path.name} (LongCtx Studio)",
        )
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise LongCtxError(
                f"the Hub refused the token for {repo_id} (HTTP {status}); use a token with write "
                "access (huggingface.co/settings/tokens)"
            ) from exc
        reason = first_line(exc)
        raise LongCtxError(f"pushing to {repo_id} failed: {reason}") from exc
    return f"https://huggingface.co/datasets/{repo_id}"
