"""poly-ray: local GGUF models served as a Ray Serve deployment graph."""

__version__ = "0.1.0"
