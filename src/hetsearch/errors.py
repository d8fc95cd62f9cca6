"""Errors raised on bad user input. The CLI prints them without a traceback."""


class HetsearchError(Exception):
    """Base class: the message names the file/field at fault and what was expected."""


class ConfigError(HetsearchError):
    """A configuration file or override is invalid."""


class DataError(HetsearchError):
    """A data set, image file or label file is missing or unreadable."""


class CheckpointError(HetsearchError):
    """A checkpoint is missing, corrupt or of an unexpected kind."""


class CompatibilityError(HetsearchError):
    """Two models (or a model and an index) cannot be used together."""
