"""Evaluations: needle in a haystack, topic and passkey retrieval, with heatmaps; perplexity
against context length, with curves.

`runner.Evaluation` is the entry point (the CLI and the Evaluate tab both use it); `niah` and
`procedural` build prompts, `backends` answers them (local model with KV reuse, or an
OpenAI-compatible endpoint), `scoring` grades answers, `perplexity` measures token losses of
long windows (local models), `results` keeps the folders and `plots` draws them.
"""
