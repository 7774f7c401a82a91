"""Reading the uploaded image out of a ``multipart/form-data`` body while it streams in, within a byte limit.

The body is parsed chunk by chunk (python-multipart) and the request is refused with ``ImageTooLargeError`` (413)
as soon as the declared ``Content-Length`` or the bytes actually received pass the limit, so a client cannot make
the service buffer a gigabyte before saying no.
"""

from __future__ import annotations

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from core.errors import ImageTooLargeError
from service.errors import FormError

FORM_OVERHEAD_BYTES = 64 * 1024
"""Room for the multipart boundaries, part headers and small extra fields on top of the file's own limit."""


class _FilePart:
    """Collects one named part of a multipart body; the callbacks are python-multipart's."""

    def __init__(self, field: str, max_bytes: int) -> None:
        self.field = field.encode()
        self.max_bytes = max_bytes
        self.data: bytearray | None = None
        self.complete = False
        self._in_field = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""

    def on_part_begin(self) -> None:
        self._in_field = False
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        self._in_field = params.get(b"name") == self.field and self.data is None
        if self._in_field:
            self.data = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_field and self.data is not None:
            self.data += data[start:end]

    def on_part_end(self) -> None:
        if self._in_field:
            self.complete = True
        self._in_field = False

    def too_large(self) -> bool:
        return self.data is not None and len(self.data) > self.max_bytes


async def read_upload(request: Request, max_bytes: int, field: str = "file") -> bytes:
    """Return the bytes of form field ``field`` (at most ``max_bytes``) of a ``multipart/form-data`` request.

    Raises ``ImageTooLargeError`` (413) once the body or the file passes the limit, without reading the rest, and
    ``FormError`` (422) when the body is not a multipart form or has no such field.
    """
    media_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise FormError(f"send the image as multipart/form-data in a field named '{field}'")
    body_limit = max_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise ImageTooLargeError(f"the upload is {int(declared)} bytes; the limit is {max_bytes} bytes")

    part = _FilePart(field, max_bytes)
    callbacks = {name: getattr(part, name) for name in dir(part) if name.startswith("on_")}
    received = 0
    try:
        # Inside the try: the parser refuses an over-long boundary (a client's error) in its constructor.
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise ImageTooLargeError(f"the upload is over the limit of {max_bytes} bytes")
            parser.write(chunk)
            if part.too_large():
                raise ImageTooLargeError(f"the file is over the limit of {max_bytes} bytes")
        parser.finalize()
    except FormParserError as exc:
        raise FormError(f"the multipart body is malformed: {exc}") from None
    if part.data is None:
        raise FormError(f"the form has no field named '{field}'; send the image in a field named '{field}'")
    # python-multipart's finalize() does not check that the body was complete: a part cut off before its closing
    # boundary would otherwise pass as the whole file.
    if not part.complete:
        raise FormError(f"the multipart body ends inside the field '{field}', before its closing boundary")
    return bytes(part.data)
