"""``multipart/form-data`` parsed from a body already in memory (bounded by :mod:`nst_lightning.serve.guard`):
no temp files, no second spool; at most ``MAX_PARTS`` parts, text fields at most ``MAX_FIELD`` bytes each."""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from nst_lightning.serve.errors import BadRequest

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


def parse_form(body: bytes, content_type: str | None) -> Form:
    """Split a multipart body into fields and files.

    Raises:
        BadRequest: not multipart/form-data (415), no boundary, malformed, too many parts or a long text field.
    """
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data":
        raise BadRequest(415, "send a multipart/form-data form (a file field named 'image' and the options)")
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest(400, "the multipart form has no boundary in its Content-Type")
    parts: list[_Part] = []
    header: list[bytes] = [b"", b""]

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise BadRequest(400, f"the form has more than {MAX_PARTS} parts")
        parts.append(_Part())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        parts[-1].headers[header[0].decode("latin-1").lower()] = header[1].decode("latin-1")
        header[0], header[1] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.append(data[start:end])
        parts[-1].size += end - start

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:  # malformed parts, or a boundary longer than the parser takes (256 bytes)
        raise BadRequest(400, f"the multipart form is malformed ({str(exc)[:120]})") from None
    form = Form()
    for part in parts:
        _, disposition = parse_options_header(part.headers.get("content-disposition", ""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if not name or name in form.fields or name in form.files:
            continue
        if b"filename" in disposition:
            filename = disposition[b"filename"].decode("utf-8", "replace")
            form.files[name] = FilePart(b"".join(part.data), part.headers.get("content-type"), filename)
        elif part.size > MAX_FIELD:
            raise BadRequest(413, f"the form field {name[:40]!r} is longer than {MAX_FIELD} bytes")
        else:
            form.fields[name] = b"".join(part.data).decode("utf-8", "replace")
    return form
