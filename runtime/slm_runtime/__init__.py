"""slm-runtime: the inference server that slm-operator pods and `slm serve` run."""

__version__ = "0.1.0"
