"""Typed errors raised at the codec's boundaries.

Every failure a user can cause (bad input, wrong model, damaged stream) has its own class so the CLI and the
pipeline can report *what* is wrong in one line and record it, instead of leaking a traceback or, worse,
returning a garbage image.
"""


class LatentarcError(Exception):
    """Base class of every error latentarc raises on purpose."""


# --- models and weights -------------------------------------------------------------------------------------
class ModelError(LatentarcError):
    """A model cannot be built or its weights cannot be found or trusted."""


class UnknownModel(ModelError):
    """The name is not in the model registry."""


class WeightsNotFound(ModelError):
    """No weight file was found at any resolution step, and downloading was impossible or disabled."""


class WeightsChecksumMismatch(ModelError):
    """A weight file exists but its SHA-256 is not the one the registry pins."""


# --- images ---------------------------------------------------------------------------------------------------
class ImageError(LatentarcError):
    """The input bytes are not an image latentarc can archive."""


class UnreadableImage(ImageError):
    """Pillow cannot identify or fully decode the bytes (truncated, corrupt, not an image)."""


class ImageTooLarge(ImageError):
    """The declared size exceeds the decompression-bomb guard."""


class UnsupportedImage(ImageError):
    """A valid image in a mode or layout the codec does not handle."""


# --- encoding -----------------------------------------------------------------------------------------------
class EncodeError(LatentarcError):
    """Encoding could not meet the request."""


class QualityFloorUnreachable(EncodeError):
    """No operating point of the codec reaches the requested quality floor (e.g. --min-psnr)."""


# --- bitstreams -----------------------------------------------------------------------------------------------
class BitstreamError(LatentarcError):
    """A stream cannot be decoded; subclasses name the cause."""


class TruncatedStream(BitstreamError):
    """The stream ends before its declared contents."""


class BadMagic(BitstreamError):
    """The stream does not start with the latentarc magic bytes."""


class UnsupportedVersion(BitstreamError):
    """The stream's format version is newer (or older) than this build can read."""


class ChecksumMismatch(BitstreamError):
    """The CRC-32C over the stream does not match: the bytes were altered."""


class CorruptStream(BitstreamError):
    """The stream passed its checksum but its fields are inconsistent (a bug or a forged CRC)."""


class ModelMismatch(BitstreamError):
    """The stream was made with a model whose weights are not the ones available for decoding."""
