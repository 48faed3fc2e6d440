"""engram-interp: a mechanistic-interpretability workbench for models with Engram conditional memory."""

__version__ = "0.1.0"
