"""Hosting the app: Hugging Face Spaces (`space`: who may do what, persistent storage, ZeroGPU)."""
