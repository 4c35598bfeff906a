"""The service under attack through real HTTP clients and raw sockets against uvicorn on loopback: inputs that
once reached a 500, restarts on a port with connections in TIME_WAIT, slow clients that must not starve others,
header blocks over the limit, the breaker's half-open state."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from nst_lightning.serve import CacheSettings, ServeSettings, create_app
from nst_lightning.serve.errors import BadRequest
from nst_lightning.serve.models import StyleModel, load_styles
from nst_lightning.serve.server import running_in_thread
from nst_lightning.serve.uploads import parse_style_mix
from tests.conftest import synthetic_photo

STYLE = "starry_night"


@pytest.fixture(scope="module")
def styles() -> dict[str, StyleModel]:
    return load_styles([STYLE], None, "eager", "cpu", thumbnail_size=32)


@pytest.fixture(scope="module")
def client(styles: dict[str, StyleModel]) -> Iterator[httpx.Client]:
    settings = ServeSettings(runtime="eager", max_size=64, max_upload_mb=0.5, cache=CacheSettings("none"))
    with running_in_thread(create_app(settings, styles)) as url, httpx.Client(base_url=url, timeout=120) as c:
        yield c


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("route", ["/stylize", "/stylize/zeroshot"])
def test_a_boundary_longer_than_the_parser_takes_is_a_400(client: httpx.Client, route: str) -> None:
    boundary = "b" * 300
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="style"\r\n\r\n{STYLE}\r\n--{boundary}--\r\n'
    response = client.post(
        route, content=body.encode(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 400, response.text
    assert "malformed" in response.json()["detail"] and "256" in response.json()["detail"]


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (1, 100), (3, 7)])
def test_a_tiny_painting_is_enlarged_to_a_flat_field_not_a_500(client: httpx.Client, size: tuple[int, int]) -> None:
    photo = png(synthetic_photo(48, 40, seed=1))
    painting = png(Image.new("RGB", size, (200, 40, 30)))
    files = {"image": ("photo.png", photo, "image/png"), "style_image": ("tiny.png", painting, "image/png")}
    response = client.post("/stylize/zeroshot", files=files)
    assert response.status_code == 200, response.text
    out = Image.open(io.BytesIO(response.content))
    assert out.size == (48, 40)


@pytest.mark.parametrize("mix", ['{"a": 1' + "0" * 400 + "}", '{"a": 1e308, "b": 1e308}', '{"a": 1e999}'])
def test_a_style_mix_weight_too_large_for_a_float_is_a_422(mix: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_style_mix(mix, ["a", "b"])
    assert refused.value.status == 422 and "weights" in refused.value.message
