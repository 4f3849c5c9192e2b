"""Reading the user's files: UTF-8 lines, with errors that name the file and line."""

import gzip
import os
import zlib


UTF8_BOM = b"\xef\xbb\xbf"  # the byte order mark Windows editors write at a file's start


class DataError(ValueError):
    """Input data that cannot be used, with the file and line that says why."""


def check_text_file(path):
    """A DataError naming `path` when it is missing or a folder."""
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file.")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, not a text file.")


def open_binary(path):
    """A text file for reading bytes (gunzipped when its name ends in .gz); clear errors for a
    missing file or a folder."""
    check_text_file(path)
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_lines(path):
    """Decoded lines of a UTF-8 text file (gunzipped when its name ends in .gz), without their
    line endings or a leading byte order mark."""
    try:
        with open_binary(path) as f:
            raw_lines = f.read().splitlines()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a readable gzip file ({error}).") from None
    if not raw_lines:
        raise DataError(f"{path}: the file is empty.")
    raw_lines[0] = raw_lines[0].removeprefix(UTF8_BOM)
    return decode_lines(raw_lines, path)


def decode_lines(raw_lines, source, first=1, numbers=None):
    """Byte lines -> strings; invalid UTF-8 is a DataError naming `source` and the line (the
    first of `raw_lines` being line `first`, or `numbers` theirs where they do not follow on)."""
    try:
        # One decode for all (a third of the time): a newline cannot complete a broken
        # character, so each line comes back as it decodes alone, unless one held a newline.
        lines = b"\n".join(raw_lines).decode("utf-8").split("\n") if raw_lines else []
        if len(lines) == len(raw_lines):
            return lines
    except UnicodeDecodeError:
        pass
    lines = []
    for number, raw in zip(numbers or range(first, first + len(raw_lines)), raw_lines):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise DataError(
                f"{source}:{number}: invalid UTF-8 at byte {error.start} of the line."
            ) from None
    return lines
