"""Experiments tab."""
