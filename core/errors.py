"""Exception types raised by ``core``.

The service maps each of these to an HTTP status in one place (``service/errors``); command-line tools turn them
into one clear line and a non-zero exit code. Messages are written for the user: they say what was wrong with which
input and what was expected.
"""


class AgeEstimationError(Exception):
    """Base class of every error ``core`` raises on purpose.

    ``code`` is the stable snake_case name an HTTP client sees (``service.errors`` maps it to a status); one that
    a request should never cause is an ``internal_error``.
    """

    code = "internal_error"


class ImageError(AgeEstimationError):
    """An image could not be used."""

    code = "bad_request"


class UnreadableImageError(ImageError):
    """The bytes are empty, truncated or corrupt (HTTP 400)."""

    code = "corrupt_image"


class ImageTooLargeError(ImageError):
    """The upload or its pixel count is over the configured limit (HTTP 413)."""

    code = "image_too_large"


class UnsupportedImageError(ImageError):
    """The content is not a JPEG, PNG, WebP, BMP or TIFF image (HTTP 415)."""

    code = "unsupported_image"


class ImageTooComplexError(ImageError):
    """Decoding the image would cost more CPU than one upload may spend (HTTP 422): more JPEG scans than any
    camera writes, or a decode that overran its deadline."""

    code = "image_too_complex"


class NoFaceError(AgeEstimationError):
    """No face was found in an image (HTTP 422)."""

    code = "no_face"


class ModelFileError(AgeEstimationError):
    """A model file is missing, truncated, lacks its metadata or disagrees with it."""


class ConfigError(AgeEstimationError):
    """A configuration file or value is wrong; the message names the key and the file."""
