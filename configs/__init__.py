"""Hydra configs (groups mirror the objects they build), installed with the package as ``magihuman.configs``."""
