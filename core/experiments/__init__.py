"""Experiments: one file runs data -> train -> evaluate -> report (spec, runner, report)."""
