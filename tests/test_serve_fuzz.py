"""Property-based attack on both stylize routes (``POST /stylize`` and ``POST /stylize/zeroshot``): hypothesis
generates multipart bodies (well formed and broken), headers, form values and image bytes and sends them through
the real app served by uvicorn on loopback; no answer may be a 5xx and nothing may log an error or a traceback.

A fixed number of examples, derandomized (the same examples on every run), in the slow tier.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from nst_lightning.serve import CacheSettings, ServeSettings, create_app
from nst_lightning.serve.models import StyleModel, load_styles
from nst_lightning.serve.server import running_in_thread

pytestmark = pytest.mark.slow

EXAMPLES = 100  # per route and kind of body: 1.5 CPU-minutes in all on the 2-core development CPU
ROUTES = ("/stylize", "/stylize/zeroshot")
STYLE_NAMES = ["multistyle", "starry_night", "multistyle.candy", "nope", ""]  # multi-style first: reads style_mix
MIX_STYLES = ["starry_night", "the_scream", "the_wave", "candy", "mosaic"]
OPTION_NAMES = ["strength", "preserve_color", "max_size", "stroke_scale", "input_noise", "input_noise_smooth_only",
                "noise_seed", "tile_overlap", "tile_stats_size", "format", "quality"]  # fmt: skip
FILE_NAMES = ["image", "style_image"]
FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "ICO", "PPM", "TGA"]
MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "I", "F", "CMYK"]
CONTENT_TYPES = ["image/png", "image/jpeg", "image/webp", "application/octet-stream", "text/plain", "image/", "",
                 "image/png; charset=utf-8", "IMAGE/PNG", "multipart/mixed"]  # fmt: skip
FRAMING = {"host", "content-length", "transfer-encoding", "content-type", "connection", "expect", "upgrade", "te"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    styles: dict[str, StyleModel] = load_styles(["starry_night", "multistyle"], None, "eager", "cpu", 32)
    limits = ServeSettings(runtime="eager", max_size=96, max_upload_mb=0.25, max_pixels=1_000_000,
                           tile_size=64, cache=CacheSettings("none"))  # fmt: skip
    with running_in_thread(create_app(limits, styles)) as base:
        yield base


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of the service and of uvicorn (whose loggers do not propagate to the root)."""
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING)
    try:
        yield caplog
    finally:
        uvicorn_logger.removeHandler(caplog.handler)


numbers = st.one_of(
    st.integers().map(str),
    st.floats().map(repr),
    st.integers(-3, 5000).map(str),
    st.sampled_from(["", " ", "1e999", "-0", "0x10", "²", "١٢", "nan", "inf", "true", "1_000", "9" * 500, "1/2"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.sampled_from(MIX_STYLES) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(MIX_STYLES) | st.text(max_size=6), inner, max_size=5)
    ),  # fmt: skip
    max_leaves=12,
)
depths = st.sampled_from([4000, 1000, 100, 2])  # 4000: deeper than hypothesis raises the recursion limit to
style_mixes = st.one_of(
    depths.map(lambda n: "[" * n),  # nested, maybe deeper than the JSON decoder's recursion limit
    depths.map(lambda n: '{"candy": ' * (n // 11) + "1" + "}" * (n // 11)),  # within the longest field
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(MIX_STYLES), st.integers() | st.floats(), min_size=1).map(json.dumps),
    st.integers(300, 4000).map(lambda n: '{"candy": 1' + "0" * n + "}"),
)
texts = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="latin-1"), max_size=40),
    st.integers(4000, 4200).map(lambda n: "a" * n),  # around the longest text field taken
)
field_values = st.one_of(numbers, texts, style_mixes, st.sampled_from(STYLE_NAMES + ["png", "jpeg", "fast", "full"]))


def _valid_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """A tiny image in any format and mode PIL writes, maybe truncated or with flipped bytes; or random bytes."""
    kind = draw(st.sampled_from(["image", "image", "mutated", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=400))
    width, height = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    mode, fmt = draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS))
    buf = io.BytesIO()
    try:
        img.convert(mode).save(buf, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):  # a mode the format cannot store
        buf = io.BytesIO()
        img.save(buf, format="PNG")
    data = buf.getvalue()
    if kind == "mutated" and data:
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data) - 1))]
        else:
            raw = bytearray(data)
            for at, value in draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=6)):
                raw[at] = value
            data = bytes(raw)
    return data


header_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,20}\Z").filter(lambda n: n.lower() not in FRAMING)
header_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)
headers = st.dictionaries(header_names, header_values, max_size=4)


@st.composite
def form_request(draw: st.DrawFn) -> tuple[bytes, str]:
    """A well-formed multipart form (built by httpx) with any files, fields and values."""
    files, data = {}, {}
    if draw(st.booleans()):  # a valid photo, painting and style under whatever else is drawn: the deep paths
        files = {name: ("p.png", _valid_png(draw(st.integers(1, 80)), draw(st.integers(1, 80))), "image/png")
                 for name in FILE_NAMES}  # fmt: skip
        data["style"] = draw(st.sampled_from(STYLE_NAMES[:3]))
        data["style_mix"] = draw(style_mixes | st.just(""))
    for name in draw(st.lists(st.sampled_from(FILE_NAMES) | st.sampled_from(OPTION_NAMES) | st.text(max_size=5),
                              max_size=3, unique=True)):  # fmt: skip
        if name in files:
            continue
        filename = draw(st.sampled_from(["p.png", "", "x" * 300, 'ä"; name="x.png']))
        files[name] = (filename, draw(image_bytes()), draw(st.sampled_from(CONTENT_TYPES)))
    names = st.sampled_from(OPTION_NAMES + ["style", "style_mix"]) | st.text(max_size=6)
    data = {**draw(st.dictionaries(names, field_values, max_size=4)), **data}
    request = httpx.Request("POST", "http://x/", files=files or None, data=data or None)
    body = request.read()
    return body, request.headers.get("content-type", "application/x-www-form-urlencoded")


@st.composite
def field_request(draw: st.DrawFn) -> tuple[bytes, str]:
    """A valid photo, painting and style, and one form field (an option, ``style`` or ``style_mix``) with any
    value: the field parsers, each reached."""
    files = {name: ("p.png", _valid_png(draw(st.integers(1, 80)), draw(st.integers(1, 80))), "image/png")
             for name in FILE_NAMES}  # fmt: skip
    data = {"style": draw(st.sampled_from(STYLE_NAMES[:3]))}
    name = draw(st.just("style_mix") | st.sampled_from(["style", *OPTION_NAMES]))  # style_mix: a JSON parser
    data[name] = draw(style_mixes if name == "style_mix" else field_values)
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.read(), request.headers["content-type"]


@st.composite
def raw_request(draw: st.DrawFn) -> tuple[bytes, str]:
    """A multipart body written by hand: any boundary (up to 300 characters), part headers and part bodies,
    maybe cut short or with junk spliced in, and any Content-Type."""
    boundary = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=";,\""),
                            min_size=1, max_size=300))  # fmt: skip
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(FILE_NAMES + OPTION_NAMES + ["style", "style_mix"]) | st.text(max_size=6))
        head = [f'Content-Disposition: form-data; name="{name}"']
        if draw(st.booleans()):
            head[0] += f'; filename="{draw(st.text(max_size=10))}"'
            head.append(f"Content-Type: {draw(st.sampled_from(CONTENT_TYPES))}")
        head += draw(st.lists(st.text(max_size=30), max_size=2))  # junk header lines
        payload = draw(image_bytes()) if draw(st.booleans()) else draw(field_values).encode("utf-8", "replace")
        parts.append(b"\r\n".join(h.encode("utf-8", "replace") for h in head) + b"\r\n\r\n" + payload)
    b = boundary.encode()
    body = b"".join(b"--" + b + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + b + b"--\r\n"
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.binary(max_size=40)) + body[cut + draw(st.integers(0, 20)) :]
    ctype = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}",
                                  f'multipart/form-data; boundary="{boundary}"', "multipart/form-data",
                                  "multipart/form-data; boundary=", "application/json", "text/plain; boundary=x",
                                  f"multipart/form-data; charset=utf-8; boundary={boundary}; x=y",
                                  f"MULTIPART/FORM-DATA; BOUNDARY={boundary}"]) | header_values)  # fmt: skip
    return body, ctype


BODIES = {"form": form_request(), "field": field_request(), "raw": raw_request()}


@st.composite
def attack(draw: st.DrawFn, bodies: st.SearchStrategy[tuple[bytes, str]]) -> tuple[bytes, dict[str, str], bool]:
    """A body, its headers, and whether it is sent chunked (no Content-Length)."""
    body, ctype = draw(bodies)
    extra = draw(headers)
    return body, {**extra, "content-type": ctype}, draw(st.booleans())


def _chunks(body: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("bodies", list(BODIES))
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])  # fmt: skip
@given(data=st.data())
def test_no_generated_request_gets_a_5xx_or_logs_a_traceback(
    url: str, logged: pytest.LogCaptureFixture, route: str, bodies: str, data: st.DataObject
) -> None:
    """``form``: well-formed forms (a valid photo, painting and style under hostile values, or anything);
    ``field``: a valid form but for one field with any value; ``raw``: hand-written multipart bodies with any
    boundary, part headers, junk and Content-Type."""
    body, head, chunked = data.draw(attack(BODIES[bodies]))
    logged.clear()
    content = _chunks(body, 1000) if chunked else body
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post(route, content=content, headers=head)
    event(f"{route} {bodies} {response.status_code}")

    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code != 200:
        assert response.headers["content-type"] == "application/json" and "detail" in response.json()
    errors = [r for r in logged.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors and "Traceback" not in logged.text, logged.text[-2000:]
