"""The Gradio front end: one module per tab, each with `build(...)`; callbacks only adapt.

Callbacks turn widget values into core dataclasses, make one core call and format the result.
Nothing here decides anything the CLI would decide differently.
"""
