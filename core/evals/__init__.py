"""Evaluations: needle in a haystack, topic and passkey retrieval, with heatmaps.

`runner.Evaluation` is the entry point (the CLI and the Evaluate tab both use it); `niah` and
`procedural` build prompts, `backends` answers them (local model with KV reuse, or an
OpenAI-compatible endpoint), `scoring` grades answers, `results` keeps the folders and
`plots` draws them.
"""
