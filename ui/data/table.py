"""Data tab, the sample table: validation panel, filters, sort, full-text search, pages.

Widget values become a `core.data.table.Query`; `table.page` picks the rows. The validation
panel lists every problem of the rows as they are now (`line N: reason`).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from core.data import schema
from core.data import table as core_table
from core.data.session import Opened
from core.errors import LongCtxError
from ui.common import optional_int, user_errors

ALL = "all"
PROBLEMS = [("all rows", ALL), ("with problems", "yes"), ("without", "no")]
SORTS = [(name.replace("_", " "), name) for name in core_table.SORT_KEYS]
MAX_LISTED = 5000  # problems listed in the panel; the CLI lists them all


@dataclass
class TablePanel:
    problems_head: gr.Markdown
    problems: gr.Textbox
    filters: list[gr.components.Component]
    search: gr.Textbox
    fields: gr.CheckboxGroup
    page: gr.Number
    table: gr.Dataframe
    info: gr.Markdown
    delete_matching: gr.Button
    keep_matching: gr.Button
    bulk_note: gr.Markdown

    @property
    def inputs(self) -> list:
        return [*self.filters, self.search, self.fields, self.page]

    @property
    def outputs(self) -> list:
        return [
            self.table,
            self.info,
            self.page,
            self.problems_head,
            self.problems,
            self.filters[0],
        ]

    @property
    def reset_outputs(self) -> list:
        return [*self.filters[1:], self.search, *self.outputs]  # the task comes with outputs


def to_query(
    task, kind, min_tokens, max_tokens, has_problems, sort_by, descending, page, page_size: int = 20
) -> core_table.Query:
    """Widget values -> a table Query (its own checks refuse a bad range)."""
    return core_table.Query(
        task=None if task in (None, "", ALL) else task,
        kind=None if kind in (None, "", ALL) else kind,
        min_tokens=optional_int(min_tokens),
        max_tokens=optional_int(max_tokens),
        has_problems={"yes": True, "no": False}.get(has_problems),
        sort_by=sort_by or "index",
        descending=bool(descending),
        page=max(0, int(page or 1) - 1),
        page_size=page_size,
    )


def _problems(op: Opened | None) -> tuple[str, str]:
    if op is None:
        return "", ""
    if op.stats is not None:
        problems = op.stats.problems()
        bad = sum(1 for s in op.stats.samples if s.kind == schema.BAD)
    elif op.validation is not None:
        problems, bad = op.validation.problems, op.validation.bad_rows
    else:
        return "Validating…", ""
    if not problems:
        return "✅ **No problems**: every row is a valid sample.", ""
    listed = "\n".join(map(str, problems[:MAX_LISTED]))
    more = f"\n… and {len(problems) - MAX_LISTED:,} more" if len(problems) > MAX_LISTED else ""
    head = (
        f"⚠️ **{len(problems):,} problem(s) in {bad:,} row(s)**: they are kept as they are "
        "and skipped by training. Fix one: filter *with problems*, pick it, edit its raw "
        "JSON below."
    )
    return head, listed + more


def render(
    op: Opened | None,
    task,
    kind,
    lo,
    hi,
    probs,
    sort_by,
    desc,
    text,
    fields,
    page,
    progress=gr.Progress(),
) -> list:
    """The table page, its caption, the page number, the validation panel, the task choices."""
    if op is None:
        return [None, "", 1, "", gr.update(value="", visible=False), gr.update()]
    query = to_query(task, kind, lo, hi, probs, sort_by, desc, page)
    matches = op.search(
        text,
        list(fields or core_table.SEARCH_FIELDS),
        progress=lambda d, t: progress((d, t), desc="searching"),
    )
    result = core_table.page(op.samples, query, matches)
    headers, rows = list(core_table.COLUMNS), [_cells(r) for r in result.rows]
    if matches is not None:
        headers.append("match")
        rows = [r + [matches.get(i, "")] for r, i in zip(rows, result.indices, strict=True)]
    shown = f"{result.page * query.page_size + 1:,}–{result.page * query.page_size + len(rows):,}"
    caption = (
        f"{shown} of **{result.total:,}** matching samples · page {result.page + 1} of "
        f"{result.pages}"
        if rows
        else "No sample matches."
    )
    if not op.ready:
        caption += " · first rows only, token counts follow once the file is measured"
    tasks = [ALL, *core_table.tasks(op.samples)]
    head, listed = _problems(op)
    return [
        {"headers": headers, "data": rows},
        caption,
        result.page + 1,
        head,
        gr.update(value=listed, visible=bool(listed)),
        gr.update(choices=tasks, value=task if task in tasks else ALL),
    ]


def _cells(row: list) -> list:
    return ["" if v is None else v for v in row]


def reset(op: Opened | None) -> list:
    """Filters back to their defaults, and the first page."""
    defaults = [ALL, ALL, None, None, ALL, "index", False]
    return [*defaults[1:], "", *render(op, *defaults, "", list(core_table.SEARCH_FIELDS), 1)]


def delete_rows(
    op: Opened | None, keep: bool, task, kind, lo, hi, probs, sort_by, desc, text, fields
) -> str:
    """Delete every sample the filters and search match (`keep`: every one they do not match),
    as one change that Undo reverts; returns what was done."""
    if op is None:
        raise LongCtxError("open a dataset first")
    session = op.edits()
    if not op.ready:
        raise LongCtxError("the file is still being measured; try again in a moment")
    query = to_query(task, kind, lo, hi, probs, sort_by, desc, 1)
    matches = op.search(text, list(fields or core_table.SEARCH_FIELDS))
    chosen = {s.index for s in core_table.select(op.samples, query, matches)}
    doomed = [i for i in range(len(session)) if (i in chosen) != keep]
    if not doomed:
        raise LongCtxError(
            "no sample to delete: " + ("every sample matches" if keep else "none matches")
        )
    if len(doomed) == len(session):
        raise LongCtxError(
            f"that would delete all {len(session):,} samples; filter or search for the ones to "
            "delete (or to keep) first"
        )
    session.delete_many(doomed)
    op.changed()
    return (
        f"🗑️ Deleted **{len(doomed):,}** samples, {len(session):,} left. *Undo* (below) brings "
        "them back; *Save* writes the file."
    )


def step(
    op: Opened | None, i, by: int, task, kind, lo, hi, probs, sort_by, desc, text, fields
) -> int:
    """The sample `by` places from `i` among those the filters and search match, in the
    table's order (`i` itself need not match: the next matching one after it is taken)."""
    i = int(i or 0)
    if op is None:
        return i
    query = to_query(task, kind, lo, hi, probs, sort_by, desc, 1)
    matches = op.search(text, list(fields or core_table.SEARCH_FIELDS))
    order = [s.index for s in core_table.select(op.samples, query, matches)]
    if not order:
        raise LongCtxError("no sample matches the filters and search")
    if i in order:
        return order[max(0, min(len(order) - 1, order.index(i) + by))]
    later = [k for k in order if (k > i if by > 0 else k < i)]  # `i` was filtered out
    return (later[0] if by > 0 else later[-1]) if later else order[0 if by > 0 else -1]


def build(opened: gr.State) -> TablePanel:
    """Lay out the validation panel and the table; wire filters, search and paging."""
    with gr.Accordion("Validation", open=True, elem_id="data-validation"):
        problems_head = gr.Markdown("Open a file to check it.", elem_id="data-problems-head")
        problems = gr.Textbox(
            show_label=False,
            lines=3,
            max_lines=10,
            interactive=False,
            elem_id="data-problems",
            visible=False,
        )
    with gr.Row(equal_height=True):
        task = gr.Dropdown([ALL], value=ALL, label="Task", min_width=120)
        kind = gr.Dropdown(
            [ALL, schema.CHAT, schema.TEXT, schema.BAD], value=ALL, label="Kind", min_width=100
        )
        lo = gr.Number(label="Min tokens", precision=0, min_width=100)
        hi = gr.Number(label="Max tokens", precision=0, min_width=100)
        probs = gr.Dropdown(
            PROBLEMS, value=ALL, label="Problems", min_width=130, elem_id="data-filter-problems"
        )
        sort_by = gr.Dropdown(SORTS, value="index", label="Sort by", min_width=130)
        desc = gr.Checkbox(label="Descending", min_width=100)
    with gr.Row(elem_classes="data-bar"):
        search = gr.Textbox(
            label="Search",
            placeholder="text in questions, answers or contexts",
            scale=4,
            elem_id="data-search",
        )
        fields = gr.CheckboxGroup(
            list(core_table.SEARCH_FIELDS),
            label="In",
            value=list(core_table.SEARCH_FIELDS),
            scale=2,
        )
        find = gr.Button("Search", scale=1)
    table = gr.Dataframe(
        headers=list(core_table.COLUMNS),
        interactive=False,
        wrap=False,
        max_height=420,
        elem_id="data-table",
        label="Samples (click a row to open it)",
    )
    with gr.Row(equal_height=True, elem_classes="data-pager"):
        prev = gr.Button("◀ Previous", size="sm", min_width=90, scale=0)
        page = gr.Number(
            1, precision=0, minimum=1, show_label=False, min_width=70, scale=0, elem_id="data-page"
        )
        after = gr.Button("Next ▶", size="sm", min_width=90, scale=0)
        info = gr.Markdown(elem_id="data-table-info")
    with gr.Row(equal_height=True, elem_classes="data-pager"):
        delete_matching = gr.Button(
            "Delete the matching samples",
            size="sm",
            variant="stop",
            scale=0,
            elem_id="data-delete-matching",
        )
        keep_matching = gr.Button(
            "Keep only the matching samples", size="sm", scale=0, elem_id="data-keep-matching"
        )
        bulk_note = gr.Markdown(elem_id="data-bulk-note")
    panel = TablePanel(
        problems_head,
        problems,
        [task, kind, lo, hi, probs, sort_by, desc],
        search,
        fields,
        page,
        table,
        info,
        delete_matching,
        keep_matching,
        bulk_note,
    )

    show = user_errors(render)
    inputs, outputs = [opened, *panel.inputs], panel.outputs
    for control in [task, kind, probs, sort_by, desc, fields]:
        control.input(show, inputs, outputs, show_progress="hidden")
    for box in [lo, hi, search, page]:
        box.submit(show, inputs, outputs, show_progress="hidden")
    find.click(show, inputs, outputs, show_progress_on=[table])
    prev.click(lambda p: max(1, int(p or 1) - 1), page, page, show_progress="hidden").then(
        show, inputs, outputs, show_progress="hidden"
    )
    after.click(lambda p: int(p or 1) + 1, page, page, show_progress="hidden").then(
        show, inputs, outputs, show_progress="hidden"
    )
    return panel
