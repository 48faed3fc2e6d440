"""User-facing errors: the CLI prints these as one line, never as a traceback."""


class EngramInterpError(Exception):
    """Base class of every error that is the user's input's fault (bad path, bad file, bad text)."""


class CheckpointError(EngramInterpError):
    """A .ckpt file is missing, foreign, corrupt, or does not match its config."""


class ConfigError(EngramInterpError, ValueError):
    """A config field has an invalid value; the message names the field."""
