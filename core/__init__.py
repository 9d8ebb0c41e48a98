"""LongCtx Studio engine: models, data, synthetic generation, training, evaluation, serving.

Nothing under core/ imports gradio; the UI in ui/ calls into here, and so does the CLI.
"""

__version__ = "0.1.0"
