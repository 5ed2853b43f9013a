"""Exception types. Each subclasses ValueError so callers that catch ValueError keep working;
the CLI turns every FermetricError into a one-line message and a non-zero exit, never a traceback.

Messages name the offending thing (file, line, key, shape) and what was expected.
"""


class FermetricError(ValueError):
    """Base class of every error fermetric raises on purpose."""


class DataError(FermetricError):
    """A data file, folder or image is not what the loader expects."""


class ConfigError(FermetricError):
    """A config file, key or override is invalid."""


class CheckpointError(FermetricError):
    """A checkpoint or index file is missing, truncated, unsafe, or of another model."""


class ModelError(FermetricError):
    """Unknown model name, bad layer name, or incompatible weights."""
