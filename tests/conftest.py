"""Shared fixtures: an isolated workspace per test session, the embedded model, a tiny Llama.

The embedded model is converted once per machine into a shared models folder
(`LONGCTX_MODELS`, default ~/.cache/longctx-studio/models) so that test sessions do not each
pay the ~20 s GGUF conversion.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_SESSION_HOME = None


def pytest_configure(config):
    global _SESSION_HOME
    import tempfile

    _SESSION_HOME = Path(tempfile.mkdtemp(prefix="longctx-test-"))
    os.environ["LONGCTX_HOME"] = str(_SESSION_HOME)
    os.environ.setdefault(
        "LONGCTX_MODELS", str(Path.home() / ".cache" / "longctx-studio" / "models")
    )
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def workspace_home() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct, loaded once per session (real weights)."""
    from core.models import ModelSpec, default_cache

    return default_cache.get(ModelSpec())


@pytest.fixture(scope="session")
def embedded_tokenizer(embedded):
    return embedded.tokenizer


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, embedded_tokenizer) -> Path:
    """A 2-layer random Llama with the embedded tokenizer, saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = embedded_tokenizer
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
