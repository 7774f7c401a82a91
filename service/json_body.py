"""JSON request bodies within limits: shape checked while the bytes stream in, parsed off the event loop.

``json.loads`` of a hostile body fails late and expensively: 100,000 nested arrays are a ``RecursionError``, a
5,000-digit number a ``ValueError``, and 150 MB of ``{}`` items take gigabytes and seconds of the event loop before
any item can be counted. :class:`JsonShape` looks at each chunk as it arrives (strings are skipped by one regular
expression, in C) and refuses, before the body is held whole, a body that nests deeper than ``max_depth``, holds
more than ``max_values`` array elements and object members, or a number longer than ``max_number_chars``. Only a
body that passed is parsed, in a worker thread (:func:`parse_json`).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from core.errors import AgeEstimationError
from service.errors import FormError, JsonLimitError, TooManyItemsError

# "Unrolled" (a run of plain bytes, then escape + run, ...): the engine scans plain runs without backtracking state.
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_TOKEN = re.compile(rb'[\[\]{},:"]|[^\s\[\]{},:"]+')


class JsonShape:
    """Streaming check of a JSON body's nesting, value count and number lengths; :meth:`feed` raises past them."""

    def __init__(
        self,
        max_depth: int,
        max_values: int,
        max_number_chars: int,
        values_hint: str = "",
        too_many: type[AgeEstimationError] = TooManyItemsError,
    ) -> None:
        self.max_depth = max_depth
        self.max_values = max_values
        self.values_hint = values_hint
        # A batch with too many values is too large (413); a one-image body with them is malformed (400).
        self.too_many = too_many
        self.max_number_chars = max_number_chars
        self.values = 0
        self._stack: list[bytes] = []
        self._in_string = False
        self._escaped = False
        self._bare = 0  # characters of the number or literal that ended the last chunk (0: none)

    def feed(self, chunk: bytes) -> None:
        """Check the next piece of the body."""
        pos = 0
        if self._escaped and chunk:
            pos, self._escaped = 1, False
        while pos < len(chunk):
            if self._in_string:
                pos = self._skip_string(chunk, pos)
                continue
            match = _TOKEN.search(chunk, pos)
            if match is None:
                self._bare = 0
                return
            token, pos = match.group(), match.end()
            self._token(token, match.start() == 0 and self._bare > 0, pos == len(chunk))

    def _skip_string(self, chunk: bytes, pos: int) -> int:
        end = _STRING_BODY.match(chunk, pos).end()  # type: ignore[union-attr]
        if end < len(chunk) and chunk[end : end + 1] == b'"':
            self._in_string = False
            return end + 1
        # The chunk ends inside the string, possibly right after a backslash that escapes the next chunk's first byte.
        self._escaped = end < len(chunk)
        return len(chunk)

    def _token(self, token: bytes, continues: bool, at_end: bool) -> None:
        if token in (b",", b":"):
            self._bare = 0
        elif token in (b"]", b"}"):
            self._bare = 0
            if self._stack:
                self._stack.pop()
        elif token in (b"[", b"{", b'"'):
            self._bare = 0
            if token == b'"':
                self._in_string = True
            else:
                self._stack.append(token)
                if len(self._stack) > self.max_depth:
                    raise JsonLimitError(f"the JSON body nests deeper than {self.max_depth} levels")
            self._count_value()
        else:
            # A number or a literal, which may go on in the next chunk.
            length = len(token) + (self._bare if continues else 0)
            if length > self.max_number_chars:
                raise JsonLimitError(f"a JSON number or literal is over {self.max_number_chars} characters")
            if not continues:
                self._count_value()
            self._bare = length if at_end else 0

    def _count_value(self) -> None:
        # Object keys are strings too, so an object's members count (twice each) as well as an array's elements.
        self.values += 1
        if self.values > self.max_values:
            raise self.too_many(f"the JSON body holds more than {self.max_values} values{self.values_hint}")


def _loads(raw: bytes, max_number_chars: int) -> Any:
    def number(text: str) -> float | int:
        if len(text) > max_number_chars:
            raise JsonLimitError(f"a JSON number is over {max_number_chars} characters")
        return float(text) if any(c in text for c in ".eE") else int(text)

    return json.loads(raw, parse_int=number, parse_float=number)


async def parse_json(raw: bytes, max_number_chars: int) -> Any:
    """Parse a body that passed :class:`JsonShape`, in a worker thread; invalid JSON is ``FormError``."""
    try:
        return await asyncio.to_thread(_loads, raw, max_number_chars)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise JsonLimitError("the JSON body nests too deep") from None
