"""Property-based fuzzing of the image reader: any PNG/JPEG, whole or cut anywhere, is read or refused cleanly."""

from __future__ import annotations

import io

import numpy as np
from bundle.data.readers import ImageReadError, read_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image


@st.composite
def encoded_images(draw):
    height, width = draw(st.integers(1, 120)), draw(st.integers(1, 120))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "I;16", "P"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG"])) if mode in ("L", "RGB") else "PNG"
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    else:
        channels = {"L": 1, "P": 1, "RGB": 3, "RGBA": 4}[mode]
        array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        array = array[..., 0] if channels == 1 else array
        image = Image.fromarray(array).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    data = buffer.getvalue()
    cut = draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))
    return (height, width), fmt, data[:cut], cut == len(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=encoded_images())
def test_any_encoded_image_is_read_or_refused_with_its_name(tmp_path, case):
    (height, width), fmt, data, whole = case
    path = tmp_path / f"fuzz.{fmt.lower()}"
    path.write_bytes(data)
    try:
        image = read_image(path).array
    except ImageReadError as error:
        assert str(path) in str(error)
        assert not whole, f"a complete {fmt} was refused: {error}"
        return
    assert image.shape == (height, width) and np.isfinite(image).all()
    assert 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
