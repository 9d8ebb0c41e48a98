"""The model runtime: names -> files (`names`), RoPE settings (`rope`), loading with 4-bit and
adapters (`loader`), tokenizers (`tokenizers`), token-by-token generation (`generation`) and chat
completions on OpenAI-compatible endpoints (`openai_compat`)."""
