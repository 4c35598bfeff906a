"""``multipart/form-data`` parsed from a body already in memory (bounded by :mod:`nst_lightning.serve.guard`):
no temp files, no second spool; at most ``MAX_PARTS`` parts, text fields at most ``MAX_FIELD`` bytes each."""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from nst_lightning.errors import TooLarge, Unreadable, UnsupportedFormat

MAX_PARTS = 16
MAX_FIELD = 4096  # bytes of one text field


@dataclass
class FilePart:
    """An uploaded file: its bytes and the content type the client gave."""

    data: bytes
    content_type: str | None
    filename: str | None


@dataclass
class Form:
    """Text fields and file parts by name (the first of each name)."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, FilePart] = field(default_factory=dict)


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    data: list[bytes] = field(default_factory=list)
    size: int = 0


class _Collector:
    """The parser's callbacks: each part's headers and data, at most ``MAX_PARTS`` parts."""

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self.header: list[bytes] = [b"", b""]

    def on_part_begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise Unreadable(f"the form has more than {MAX_PARTS} parts")
        self.parts.append(_Part())

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header[0] += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header[1] += data[start:end]

    def on_header_end(self) -> None:
        self.parts[-1].headers[self.header[0].decode("latin-1").lower()] = self.header[1].decode("latin-1")
        self.header = [b"", b""]

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].data.append(data[start:end])
        self.parts[-1].size += end - start

    def callbacks(self) -> dict[str, object]:
        names = ("on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_part_data")
        return {name: getattr(self, name) for name in names}


def parse_form(body: bytes, content_type: str | None) -> Form:
    """Split a multipart body into fields and files.

    Raises:
        UnsupportedFormat: not multipart/form-data. Unreadable: no boundary, malformed, too many parts.
        TooLarge: a text field longer than ``MAX_FIELD`` bytes.
    """
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data":
        raise UnsupportedFormat("send a multipart/form-data form (a file field named 'image' and the options)")
    boundary = params.get(b"boundary")
    if not boundary:
        raise Unreadable("the multipart form has no boundary in its Content-Type")
    collector = _Collector()
    try:
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:  # malformed parts, or a boundary longer than the parser takes (256 bytes)
        raise Unreadable(f"the multipart form is malformed ({str(exc)[:120]})") from None
    form = Form()
    for part in collector.parts:
        _, disposition = parse_options_header(part.headers.get("content-disposition", ""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if not name or name in form.fields or name in form.files:
            continue
        if b"filename" in disposition:
            filename = disposition[b"filename"].decode("utf-8", "replace")
            form.files[name] = FilePart(b"".join(part.data), part.headers.get("content-type"), filename)
        elif part.size > MAX_FIELD:
            raise TooLarge(f"the form field {name[:40]!r} is longer than {MAX_FIELD} bytes")
        else:
            form.fields[name] = b"".join(part.data).decode("utf-8", "replace")
    return form
