"""Training: config (YAML), engine (Trainer + peft), runs (folders, status, stop/resume), fit, export."""
