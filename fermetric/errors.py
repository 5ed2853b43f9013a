"""Exception types. Each subclasses ValueError so callers that catch ValueError keep working;
the CLI turns every FermetricError into a one-line message and a non-zero exit, never a traceback.

Messages name the offending thing (file, line, key, shape) and what was expected.
"""


# A message quotes what it found (a header, a value, a library's own error); a file of one huge
# line or a library's page-long explanation must not become a page-long message.
MAX_MESSAGE = 800


def clip(text: object, limit: int = 160) -> str:
    """`text` on one line, cut to `limit` characters with a note of how much was left out."""
    s = " ".join(str(text).split())
    if len(s) <= limit:
        return s
    return f"{s[:limit]}... ({len(s) - limit} more characters)"


class FermetricError(ValueError):
    """Base class of every error fermetric raises on purpose. The message is kept to one line of
    at most MAX_MESSAGE characters (see `clip`)."""

    def __init__(self, *args: object):
        if len(args) == 1 and isinstance(args[0], str):
            args = (clip(args[0], MAX_MESSAGE),)
        super().__init__(*args)


class DataError(FermetricError):
    """A data file, folder or image is not what the loader expects."""


class ConfigError(FermetricError):
    """A config file, key or override is invalid."""


class CheckpointError(FermetricError):
    """A checkpoint or index file is missing, truncated, unsafe, or of another model."""


class ModelError(FermetricError):
    """Unknown model name, bad layer name, or incompatible weights."""


class DiskFullError(FermetricError):
    """No space left on the device (or over quota) while writing a file; the file it was to replace is unchanged."""
