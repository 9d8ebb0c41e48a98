"""The `longctx` command line as a package: `main` builds the parser; one module per command group
(`data`, `synth`, `train`, `evals`, `serve`, `rope`) adds its sub-commands with `register()`."""
