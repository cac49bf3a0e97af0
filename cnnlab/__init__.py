"""cnnlab: run, compare and reproduce CNN image-classification experiments from one command line."""

__version__ = "0.1.0"
