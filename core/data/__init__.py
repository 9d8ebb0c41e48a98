"""Long-context training sets: read, validate, render, measure, edit and mix them.

One module per concern (see each module's docstring):

- `schema`   what a sample is and what is wrong with one (pure, no I/O)
- `io`       open JSONL / JSON arrays lazily (row index by byte offsets), `path[N]`; atomic save
- `columnar` Parquet, `save_to_disk` folders and Hub datasets as the same row sources
- `render`   THE rendering the trainer uses: chat template -> input_ids, labels, turn spans
- `tokcount` exact token counts, several times faster than encoding
- `stats`    per-sample token statistics for a whole file, cached on disk
- `table`    rows for the sample table: sort, filter, search, pages
- `figures`  plotly figures from statistics
- `dedup`    exact duplicate contexts and near-duplicate questions
- `evidence` where in the context an answer's evidence sits
- `edit`     an editable dataset session with undo and byte-preserving save
- `view`     the sample view: folded turns, the rendered sequence cut into highlighted pieces
- `mix`      build a training mixture from several files; push to the Hub
- `cli`      `longctx data ...`

Nothing here imports gradio; the Data tab adapts these records and figures.
"""
