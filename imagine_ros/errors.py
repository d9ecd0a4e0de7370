"""Exceptions that the command line turns into a one-line ``imagine-ros: error: ...`` message."""


class ImagineRosError(Exception):
    """Base class of every error that is the user's input, not a bug: the message names the problem."""


class ConfigError(ImagineRosError, ValueError):
    """An option, config value or argument that cannot be used (unknown name, impossible size, ...)."""


class DatasetError(ImagineRosError):
    """A dataset folder that cannot be read or written as asked (foreign/corrupt files, other settings, ...)."""
