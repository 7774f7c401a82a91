"""service.json_body: the streaming shape check gives the same verdict however the body is cut into chunks."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import JsonLimitError, TooManyItemsError
from service.json_body import JsonShape

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


def _verdict(body: bytes, cuts: list[int]) -> str:
    shape = JsonShape(max_depth=4, max_values=20, max_number_chars=6)
    edges = [0, *sorted(min(cut, len(body)) for cut in cuts), len(body)]
    try:
        for start, end in itertools.pairwise(edges):
            shape.feed(body[start:end])
    except (JsonLimitError, TooManyItemsError) as exc:
        return type(exc).__name__
    return f"ok {shape.values}"


@settings(max_examples=200, deadline=None)
@given(document=_JSON, cuts=st.lists(st.integers(0, 400), max_size=6))
def test_the_verdict_does_not_depend_on_the_chunks(document: object, cuts: list[int]) -> None:
    body = json.dumps(document).encode()
    assert _verdict(body, cuts) == _verdict(body, [])


@pytest.mark.parametrize(
    ("body", "verdict"),
    [
        (b'{"images": ["a", "b"]}', "ok 5"),
        (b'{"images": ["a\\"]", "b\\\\"]}', "ok 5"),
        (b"[[[[[1]]]]]", "JsonLimitError"),
        (b"[1234567]", "JsonLimitError"),
        (b"[" + b"1," * 30 + b"1]", "TooManyItemsError"),
    ],
)
def test_known_bodies(body: bytes, verdict: str) -> None:
    for step in (1, 2, 3, len(body)):
        assert _verdict(body, list(range(step, len(body), step))) == verdict
