"""scoutdoc: read whole sources into one long prompt and answer questions with an embedded model."""

__version__ = "0.1.0"
