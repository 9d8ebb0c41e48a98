"""Synthetic training data: the paper's LLM-written tasks and procedural tasks with exact answers."""
