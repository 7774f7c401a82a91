"""Reading uploaded images out of a request body while it streams in, within a byte limit.

Two body types: ``multipart/form-data`` (field ``file``, parsed chunk by chunk with python-multipart) and
``application/json`` (``{"image": "<base64>"}``, or ``{"images": [...]}`` for a batch). The request is refused with
``ImageTooLargeError`` (413) as soon as the declared ``Content-Length`` or the bytes actually received pass the
limit, so a client cannot make the service buffer a gigabyte before saying no. A JSON body's shape (nesting,
number of values, number lengths) is checked chunk by chunk as it arrives and it is parsed off the event loop
(``service.json_body``). There is deliberately no URL input: a server that fetches URLs for its clients can be
made to reach its own network (SSRF).
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from core.errors import AgeEstimationError, ImageTooLargeError
from service.errors import BadRequestError, BodyTooLargeError, FormError, TooManyItemsError
from service.json_body import JsonShape, parse_json

FORM_OVERHEAD_BYTES = 64 * 1024
"""Room for the multipart boundaries, part headers and small extra fields on top of the file's own limit."""


class _FilePart:
    """Collects one named part of a multipart body; the callbacks are python-multipart's."""

    def __init__(self, field: str, max_bytes: int, max_parts: int = 1) -> None:
        self.field = field.encode()
        self.max_bytes = max_bytes
        self.max_parts = max_parts
        self.data: bytearray | None = None
        self.complete = False
        self.parts: list[bytes | AgeEstimationError] = []
        self.extra_parts = 0
        self._oversized = False
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
        named = params.get(b"name") == self.field
        if named and len(self.parts) + (self.data is not None) >= self.max_parts:
            self.extra_parts += 1
            named = False
        self._in_field = named
        if self._in_field:
            self.data = bytearray()
            self.complete = False
            self._oversized = False

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_field and self.data is not None and not self._oversized:
            self.data += data[start:end]
            if self.max_parts > 1 and len(self.data) > self.max_bytes:
                # In a batch one oversized file is that item's error; its bytes are not kept.
                self._oversized = True
                self.data.clear()

    def on_part_end(self) -> None:
        if self._in_field:
            self.complete = True
            if self.max_parts > 1 and self.data is not None:
                self.parts.append(
                    ImageTooLargeError(f"the file is over the limit of {self.max_bytes} bytes")
                    if self._oversized
                    else bytes(self.data)
                )
                self.data = None
        self._in_field = False

    def too_large(self) -> bool:
        return self.data is not None and len(self.data) > self.max_bytes


async def read_upload(request: Request, max_bytes: int, field: str = "file") -> bytes:
    """Return the bytes of form field ``field`` (at most ``max_bytes``) of a ``multipart/form-data`` request.

    Raises ``ImageTooLargeError`` (413) once the body or the file passes the limit, without reading the rest, and
    ``FormError`` (422) when the body is not a multipart form or has no such field.
    """
    part = await _read_form(request, max_bytes, field, max_parts=1, body_limit=max_bytes + FORM_OVERHEAD_BYTES)
    if part.data is None:
        raise FormError(f"the form has no field named '{field}'; send the image in a field named '{field}'")
    if part.extra_parts:
        # Taking the first (or the last) would be a guess, as for a repeated query parameter.
        raise FormError(
            f"the form has {1 + part.extra_parts} fields named '{field}'; send one (several: /predict/batch)"
        )
    # python-multipart's finalize() does not check that the body was complete: a part cut off before its closing
    # boundary would otherwise pass as the whole file.
    if not part.complete:
        raise FormError(f"the multipart body ends inside the field '{field}', before its closing boundary")
    return bytes(part.data)


async def read_image(request: Request, max_bytes: int) -> bytes:
    """The one image of ``POST /predict``: multipart field ``file``, or JSON ``{"image": "<base64>"}``.

    Both give the same bytes for the same photo, so the answers are identical. Bad base64 is
    ``UnreadableImageError`` (400); a decoded image over ``max_bytes`` is ``ImageTooLargeError`` (413).
    """
    if not _is_json(request):
        return await read_upload(request, max_bytes)
    body = await _read_json(
        request, _base64_limit(max_bytes) + FORM_OVERHEAD_BYTES, max_bytes, max_files=1, single=True
    )
    if not isinstance(body, dict) or "image" not in body:
        raise FormError(
            "send the photo as multipart/form-data in a field named 'file', or as the JSON object "
            '{"image": "<base64 of the photo>"}'
        )
    image = decode_base64(body["image"], max_bytes)
    if isinstance(image, AgeEstimationError):
        raise image
    return image


async def read_images(request: Request, max_bytes: int, max_files: int) -> list[bytes | AgeEstimationError]:
    """The images of ``POST /predict/batch``, in order: every multipart ``file`` part, or JSON ``{"images": [...]}``.

    An item that cannot be used (over ``max_bytes``, bad base64) becomes its error, so the others still count.
    More than ``max_files`` items, or a body over ``max_files`` times the file limit, is ``ImageTooLargeError``.
    """
    if _is_json(request):
        body_limit = max_files * _base64_limit(max_bytes) + FORM_OVERHEAD_BYTES
        body = await _read_json(request, body_limit, max_bytes, max_files)
        if not isinstance(body, dict) or not isinstance(body.get("images"), list) or not body["images"]:
            raise FormError('send the JSON object {"images": ["<base64>", ...]} with at least one image')
        items: list[Any] = body["images"]
        if len(items) > max_files:
            raise TooManyItemsError(f"{len(items)} images in one batch; MAX_BATCH_FILES is {max_files}")
        return [decode_base64(item, max_bytes) for item in items]
    limit = max_files * (max_bytes + FORM_OVERHEAD_BYTES)
    part = await _read_form(request, max_bytes, "file", max_parts=max_files, body_limit=limit)
    if part.extra_parts:
        raise TooManyItemsError(f"{max_files + part.extra_parts} files in one batch; MAX_BATCH_FILES is {max_files}")
    if part.data is not None:
        raise FormError("the multipart body ends inside a 'file' part, before its closing boundary")
    if not part.parts:
        raise FormError("the form has no field named 'file'; send each image in a part named 'file'")
    return part.parts


def decode_base64(value: Any, max_bytes: int) -> bytes | AgeEstimationError:
    """The bytes of a base64 string (standard alphabet; a ``data:...;base64,`` prefix is allowed), or the error."""
    if not isinstance(value, str):
        return FormError("each image must be a base64 string")
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    if len(text) > _base64_limit(max_bytes):
        return ImageTooLargeError(f"the image is over the limit of {max_bytes} bytes")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return BadRequestError("the image is not valid base64")
    if len(data) > max_bytes:
        return ImageTooLargeError(f"the image is {len(data)} bytes; the limit is {max_bytes} bytes")
    return data


def _base64_limit(max_bytes: int) -> int:
    return 4 * math.ceil(max_bytes / 3) + 4


def _is_json(request: Request) -> bool:
    media_type, _ = parse_options_header(request.headers.get("content-type", ""))
    return media_type == b"application/json"


def _check_declared_length(request: Request, body_limit: int, max_bytes: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise BodyTooLargeError(f"the upload is {int(declared)} bytes; the limit is {max_bytes} bytes per image")


async def _read_json(request: Request, body_limit: int, max_bytes: int, max_files: int, single: bool = False) -> Any:
    """The parsed JSON body: its length checked before reading, its shape while reading, parsed in a thread."""
    _check_declared_length(request, body_limit, max_bytes)
    settings = request.app.state.runtime.settings
    # {"images": [...]}: the object, its key, the array, one value per image, and room for a few other fields.
    if single:
        hint, too_many = '; this route takes {"image": "<base64>"}', BadRequestError
    else:
        hint, too_many = f" (MAX_BATCH_FILES is {max_files})", TooManyItemsError
    shape = JsonShape(settings.max_json_depth, max_files + 16, settings.max_json_number_chars, hint, too_many)
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > body_limit:
            raise BodyTooLargeError(f"the upload is over the limit of {max_bytes} bytes per image")
        shape.feed(chunk)
        body += chunk
    return await parse_json(bytes(body), settings.max_json_number_chars)


async def _read_form(request: Request, max_bytes: int, field: str, max_parts: int, body_limit: int) -> _FilePart:
    media_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise FormError(f"send the image as multipart/form-data in a field named '{field}', or as JSON with base64")
    _check_declared_length(request, body_limit, max_bytes)
    part = _FilePart(field, max_bytes, max_parts)
    callbacks = {name: getattr(part, name) for name in dir(part) if name.startswith("on_")}
    received = 0
    try:
        # Inside the try: the parser refuses an over-long boundary (a client's error) in its constructor.
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise BodyTooLargeError(f"the upload is over the limit of {max_bytes} bytes")
            parser.write(chunk)
            if max_parts == 1 and part.too_large():
                raise ImageTooLargeError(f"the file is over the limit of {max_bytes} bytes")
        parser.finalize()
    except FormParserError as exc:
        raise FormError(f"the multipart body is malformed: {exc}") from None
    return part
