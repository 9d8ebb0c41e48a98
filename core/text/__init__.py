"""Long texts: documents a user brings (`documents`: text, Markdown, PDF, EPUB, HTML) and the
corpora built from them or from the standard library (`corpus`)."""
