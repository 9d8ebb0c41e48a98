"""RoPE: the advisor that suggests a new base for a target length and draws what it does
(`advisor`). Reading and overriding a config's RoPE settings is `core.models.rope`."""
