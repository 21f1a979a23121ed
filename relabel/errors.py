"""Errors a user can act on: the CLI shows their message once, without a traceback."""


class RelabelError(Exception):
    """Base class of every error caused by the user's input, not by a bug."""


class ConfigError(RelabelError):
    """A workflow file or option is missing, mistyped or inconsistent."""


class CatalogError(RelabelError):
    """A catalog file, HDU, column or value cannot be used."""


class CheckpointError(RelabelError):
    """A model checkpoint is unreadable, unsafe or does not fit the data."""


class OutputError(RelabelError):
    """The output location cannot be written as asked (exists, other run, ...)."""


class ClusterError(RelabelError):
    """A Dask cluster cannot be started or reached, or its workers do not arrive."""


class WorkersMissing(ClusterError):
    """Workers did not connect in time; the message says how many came and what to check."""


class RelabelWarning(UserWarning):
    """Base class of relabel's warnings (filter them with ``warnings.filterwarnings``)."""


class DataWarning(RelabelWarning):
    """A catalog value looks wrong but is used as given (e.g. an undeclared missing-value code like -9999)."""


class ModelWarning(RelabelWarning):
    """A checkpoint is usable but suspect (e.g. it failed its collapse guard in training)."""


class MissingDependencyError(RelabelError, ImportError):
    """An optional dependency (an extra such as ``relabel[sim]``) is not installed."""
