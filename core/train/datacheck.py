"""Before a launch: how much of each data source fits max_length.

The paper drops every sample longer than max_length. A source whose samples are mostly longer
would train on few of them, and nothing would say so until the run's data report. This measures
each file with the Data tab's token statistics (`core.data.stats`, cached per file and
tokenizer, so a second check is instant) under the chat template of the model to train, and
procedural sources from their configured length.

This module knows nothing about gradio or about how training runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.data.io import Progress
from core.train.config import DataSource, TrainConfig

FATES = {
    "drop": "dropped",
    "truncate_middle": "cut in the middle",
    "head": "texts keep their head + EOS, conversations dropped",
}


@dataclass
class SourceFit:
    """One source against max_length."""

    source: str
    role: str
    """`training` or `held-out`."""
    samples: int
    over: int
    """Samples longer than max_length: dropped, or cut (overflow)."""
    malformed: int = 0
    overflow: str = ""
    """The source's own overflow policy; empty: the run's."""

    @property
    def usable(self) -> int:
        return self.samples - self.malformed

    def line(self, config: TrainConfig) -> str:
        """`file (training): 3,412 samples, 88 over 81,920 tokens (2.6 %): dropped`."""
        text = f"{self.source} ({self.role}): {self.samples:,} samples"
        if self.malformed:
            text += f", {self.malformed:,} malformed (skipped)"
        if not self.over:
            return text + f", all within {config.max_length:,} tokens"
        fate = FATES[self.overflow or config.overflow]
        share = 100 * self.over / max(1, self.usable)
        return text + f", {self.over:,} over {config.max_length:,} tokens ({share:.1f} %): {fate}"


def check(config: TrainConfig, progress: Progress | None = None) -> list[SourceFit]:
    """Every source of `config`, training ones first, then the held-out file.

    Raises:
        LongCtxError: a file or the tokenizer cannot be read.
    """
    from core.data import stats
    from core.models.tokenizers import load_tokenizer
    from core.train.engine import data_spec

    tokenizer = load_tokenizer(config.model)
    fits = []
    sources = [(s, "training") for s in config.data]
    if config.eval_data:
        sources.append((DataSource(path=config.eval_data), "held-out"))
    for source, role in sources:
        if source.procedural:
            over = source.n if source.length > config.max_length else 0
            fits.append(SourceFit(source.describe(), role, source.n, over, 0, source.overflow))
            continue
        measured = stats.measure(
            data_spec(source.path), tokenizer, name=config.model, progress=progress
        )
        summary = measured.summary(config.max_length)
        fits.append(
            SourceFit(
                source.path,
                role,
                summary["samples"],
                summary["over_max_length"],
                summary["malformed"],
                source.overflow,
            )
        )
    return fits
