"""Exception hierarchy: every failure a user can cause raises one of these.

The CLI catches ``NNCompressError`` and prints its message on one line, so each
message must say what was wrong and what to do about it.
"""

from __future__ import annotations

from typing import Optional


class NNCompressError(Exception):
    """Base of every error nncompress raises on purpose."""


class ConfigError(NNCompressError, ValueError):
    """An option or configuration value is out of range or of the wrong type.

    ``field`` names the setting at fault as the message spells it, and the message
    names it first (after a recipe's ``SOURCE: `` prefix), so a caller can say it in
    its own words (a recipe path, a command-line flag) without parsing the text.
    ``key`` is the entry of a per-layer setting (a layer name). A range check also
    says what the value must be (``expected``) and shows the value it got (``got``).
    """

    def __init__(
        self,
        message: str,
        *,
        field: Optional[str] = None,
        key: Optional[str] = None,
        expected: Optional[str] = None,
        got: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.key = key
        self.expected = expected
        self.got = got


class RecipeError(ConfigError):
    """A recipe file (or an override of one) cannot be read or holds a bad key or value;
    the message starts with the file and the key's dotted path."""


class DataError(NNCompressError):
    """A data set is missing, malformed or inconsistent."""


class CheckpointError(NNCompressError):
    """A checkpoint cannot be read, is unsafe to read, or does not match the model."""


class ModelError(NNCompressError):
    """A model cannot be built, or holds weights that cannot be used (NaN/Inf)."""


class FormatError(NNCompressError):
    """A compressed file is malformed."""


class BadMagicError(FormatError):
    """The file does not start with the nncompress magic bytes: it is not our file."""


class LayoutError(FormatError):
    """The header describes sections that do not fit the file (offsets, lengths, overlaps)."""


class ChecksumError(FormatError):
    """A section or header of a compressed file fails its checksum."""


class TruncatedError(FormatError):
    """A compressed file ends before its header says it should."""


class VersionError(FormatError):
    """A compressed file was written by a newer format version than this reader knows."""


class DecodeLimitError(FormatError):
    """A compressed file's tensors would decode to more memory than the reader's limit allows
    (raise the limit if the file is trusted)."""


class DistributedError(NNCompressError):
    """A run on several processes (torchrun) lost a rank, timed out waiting for one, or
    could not start its process group."""


class RankMismatchError(DistributedError):
    """Tensors that every rank must hold identically (weights, masks, codebooks) differ."""


class ReportError(NNCompressError):
    """A run directory cannot be turned into a report: missing or malformed files."""


class PathError(ConfigError):
    """A path given as input or output is of the wrong kind (a folder, a FIFO, a device,
    a /proc or /sys file), too large to read, or cannot be written."""


class OutputError(NNCompressError, OSError):
    """An output could not be written (disk full, quota or file-size limit, I/O error); the partial
    temporary file was removed and any earlier file at that path is untouched. Also an OSError, as
    the failed write it stands for."""
