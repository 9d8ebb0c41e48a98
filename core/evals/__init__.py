"""Evaluations: needle in a haystack, topic and passkey retrieval, RULER's synthetic tasks,
held-out samples, perplexity against context length; standard suites through lm-eval; the
scorecard of base vs. tuned; extension methods side by side.

`runner.Evaluation` is the entry point (the CLI and the Evaluate tab both use it); `niah`,
`retrieval`, `ruler` and `samples` build prompts, `backends` answers them (local model with KV
reuse, or an OpenAI-compatible endpoint), `scoring` grades answers, `perplexity` measures token
losses of long windows (local models), `harness` runs lm-eval suites into our folders, `results`
keeps the folders, `figures` draws them, `scorecard` gathers them, `methods` compares RoPE
settings, `jobs` runs one in the app.
"""
