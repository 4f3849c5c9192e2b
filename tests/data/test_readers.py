"""Decoding the user's byte lines: all at once where that gives what line-by-line decoding
gives, with the error naming the file and line otherwise."""

import gzip

import pytest

from tfx_transformer.data import DataError, decode_lines, read_lines


def test_lines_decode_as_each_would_alone():
    raw = [b"plain", "\u00e9t\u00e9 \u2014 \U0001f600".encode(), b"", b"tab\there", b"cr\rinside"]
    assert decode_lines(raw, "f") == [line.decode("utf-8") for line in raw]
    assert decode_lines([], "f") == []
    # A "line" holding a newline stays one line (the joined text would split it in two).
    assert decode_lines([b"a\nb", b"c"], "f") == ["a\nb", "c"]


@pytest.mark.parametrize("bad, at", [([b"ok", b"\xc3", b"ok"], 11), ([b"\xe2\x82", b"x"], 10),
                                     ([b"ok", b"ok", b"caf\xe9"], 12)])
def test_invalid_utf8_names_the_line_even_where_a_newline_follows_a_broken_character(bad, at):
    with pytest.raises(DataError, match=f"^f.txt:{at}: invalid UTF-8"):
        decode_lines(bad, "f.txt", first=10)


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
@pytest.mark.parametrize("count", [1, 3])
def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path, ending, count):
    path = tmp_path / "bom.txt"
    lines = [f"line {n} \u00e9" for n in range(count)]
    path.write_bytes(("\ufeff" + ending.join(lines) + ending).encode("utf-8"))
    assert read_lines(str(path)) == lines
    # Only a leading mark is one: elsewhere U+FEFF is text the file holds.
    path.write_bytes(("a\n\ufeffb\n").encode("utf-8"))
    assert read_lines(str(path)) == ["a", "\ufeffb"]


def test_gzipped_files_read_as_their_text(tmp_path):
    lines = ["\u00e9t\u00e9", "two"]
    path = tmp_path / "text.gz"
    path.write_bytes(gzip.compress(("\ufeff" + "\n".join(lines) + "\n").encode("utf-8")))
    assert read_lines(str(path)) == lines
    cut = tmp_path / "cut.gz"
    cut.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(DataError, match="cut.gz: not a readable gzip file"):
        read_lines(str(cut))
    plain = tmp_path / "plain.gz"
    plain.write_text("not compressed\n")
    with pytest.raises(DataError, match="plain.gz: not a readable gzip file"):
        read_lines(str(plain))
