"""The `slm-runtime serve` command."""
