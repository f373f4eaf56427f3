"""The one base64url helper: unpadded text out, padded or unpadded text in; strict decoding
(list cursors) refuses characters the lenient one (tokens) skips."""

from __future__ import annotations

import binascii

import pytest

from shared import b64url


@pytest.mark.parametrize("data", [b"", b"\xff", b"\xfb\xff", b"\x00\x01\x02", bytes(range(256))])
def test_round_trip_without_padding_in_the_url_safe_alphabet(data):
    text = b64url.encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url.decode(text) == data == b64url.decode(text, strict=True)


def test_known_values():
    assert b64url.encode(b"\xfb\xff") == "-_8"
    assert b64url.decode("-_8=") == b"\xfb\xff"


def test_strict_refuses_what_lenient_skips():
    assert b64url.decode("AAAA!") == b"\x00\x00\x00"
    with pytest.raises(binascii.Error):
        b64url.decode("AAAA!", strict=True)


def test_a_wrong_length_and_non_ascii_text_raise():
    with pytest.raises(binascii.Error):
        b64url.decode("abcde")
    with pytest.raises(ValueError):
        b64url.decode("é")
