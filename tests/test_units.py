"""One size rule for every option: k/M/G/T are powers of 1024, with or without "i" and "B"."""

import pytest

from scoutdoc.errors import UsageError
from scoutdoc.units import format_bytes, parse_size

GIB = 1 << 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512),
        ("500k", 500 * 1024),
        ("64k", 65_536),
        ("4Ki", 4096),
        ("4M", 4 * 2**20),
        ("4MB", 4 * 2**20),
        ("4mib", 4 * 2**20),
        ("10M", 10_485_760),  # Llama 4 Scout's "10M" context
        ("128k", 131_072),
        ("8GiB", 8 * GIB),
        ("1.5GB", int(1.5 * GIB)),
        (" 2 T ", 2 * 2**40),
        (".5k", 512),
        (4096, 4096),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "", "4X", "-1k", "1e3", "ib", "4 M M"])
def test_a_text_that_is_no_size_is_one_usage_error_naming_the_option(text):
    with pytest.raises(UsageError, match=r"^--max-file-size .* is not a size; .*powers of 1024"):
        parse_size(text, "--max-file-size")


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(36 * 8192 * 4096) == "1.12 GiB"
    assert format_bytes(48 * 1024) == "48.00 KiB"
