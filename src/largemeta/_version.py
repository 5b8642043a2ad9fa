"""The package's version: the ground floor, imported by the package face, the CLI, provenance and run folders
(and read by pyproject.toml's dynamic version), so that nothing below the face has to import ``largemeta``."""

__version__ = "0.2.0"
