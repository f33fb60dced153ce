"""Every error neuropool raises on purpose.

Each class also inherits the builtin a caller would naturally catch (``FileNotFoundError``,
``ValueError``, ...), so ``except FileNotFoundError`` keeps working, while
``except NeuropoolError`` catches everything of ours. Messages say what was expected, what was
found, and how to fix it; they always name the file or URL concerned.
"""

from __future__ import annotations


class NeuropoolError(Exception):
    """Base class of every error raised by neuropool."""


# -- input data ------------------------------------------------------------------------------


class RawDataError(NeuropoolError, ValueError):
    """A raw recording is inconsistent: sizes, headers and data disagree."""


class TruncatedFileError(RawDataError):
    """A data file is shorter than its header says it is."""


class ChecksumError(RawDataError):
    """A file's content does not match the checksum recorded for it."""


class MetadataError(RawDataError):
    """A metadata file (``.meta``, ``.ch``, ``structure.oebin``) is missing keys or malformed."""


class SourceNotFoundError(NeuropoolError, FileNotFoundError):
    """A source file or URL does not exist or cannot be reached."""


class UnknownFormatError(NeuropoolError, ValueError):
    """No registered reader recognises a path."""


# -- configuration ---------------------------------------------------------------------------


class ConfigError(NeuropoolError, ValueError):
    """A pipeline configuration or task parameter is invalid."""


class MissingDependencyError(NeuropoolError, ImportError):
    """An optional package needed for a feature is not installed."""


# -- graphs, stores and runs ------------------------------------------------------------------


class GraphError(NeuropoolError, ValueError):
    """A task graph is invalid: a missing input, a cycle, an unknown task."""


class ResourceError(GraphError):
    """A node needs a resource (a GPU, memory) that no worker of the pool offers."""


class StoreError(NeuropoolError, OSError):
    """A derived asset cannot be read or written as expected."""


class TaskFailedError(NeuropoolError, RuntimeError):
    """A task raised; the message names the node and quotes the task's own error."""

    def __init__(self, node: str, cause: BaseException | str):
        self.node = node
        self.cause = cause
        text = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"{node} failed: {text}")


class SortingError(NeuropoolError, RuntimeError):
    """A spike sorter failed: it raised, crashed, ran out of memory or found no units."""


# -- atlases ---------------------------------------------------------------------------------


class AtlasError(NeuropoolError, ValueError):
    """An atlas volume is not what it must be: not an NRRD, not 3-D, not integer region ids."""
