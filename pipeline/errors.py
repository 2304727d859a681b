"""Typed errors raised by the archival pipeline (storage, tables, jobs).

Same style as :mod:`latentarc.codec.errors`: every failure a user can cause has its own class, so the CLI can
print one line and the jobs can record ``error_type`` in the errors table instead of leaking a traceback.
"""

from latentarc.codec.errors import LatentarcError


class PipelineError(LatentarcError):
    """Base class of every error the pipeline layer raises on purpose."""


class SourceNotFound(PipelineError):
    """A source (directory, prefix, manifest, object) does not exist or cannot be listed."""


class TableError(PipelineError):
    """A bitstream table cannot be written or read: bad rows, missing columns, damaged commit log."""


class UnsafeKey(PipelineError):
    """A key would escape the destination root (absolute, ``..``, NUL byte, ...) and is refused."""


class ConcurrentCommit(TableError):
    """A commit kept losing the race for the next commit sequence number to other writers of the same table."""
