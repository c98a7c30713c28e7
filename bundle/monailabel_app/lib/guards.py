"""Request checks MONAI Label's own endpoints leave to the app: ids, tags, uploads and boxes.

MONAI Label 0.8 infers on any existing path given as ``image`` (another user's file), joins
``image`` ids and label ``tag`` values into datastore paths (``../outside/x`` writes outside the
studies folder), stores any uploaded bytes as an image or label, and turns bad parameters into a
bare 500. The app refuses each with a 4xx and a message saying what to send instead (never a
server path); :func:`guard_endpoints` removes the request's upload whatever goes wrong (:mod:`lib.uploads`).
"""

from __future__ import annotations

import functools
import re

from fastapi import HTTPException
from lib.uploads import discard, is_own_upload, redact

PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def plain_name(value: object, what: str) -> str:
    """``value`` if it is a plain file name stem (no folder parts), else a 400 naming ``what``."""
    if not isinstance(value, str) or not PLAIN_NAME.fullmatch(value) or ".." in value:
        raise HTTPException(
            status_code=400,
            detail=f"{what} {value!r} is not a plain name: use letters, digits, '.', '_' and '-' (no folders, no '..')",
        )
    return value


def parse_roi(value: object) -> list[float] | None:
    """The ``roi`` request parameter as ``[x0, y0, x1, y1]`` (a list, or a "x0,y0,x1,y1" string), or None."""
    if value in (None, "", []):
        return None
    text = value if isinstance(value, str) else None
    try:
        parts = text.replace("[", "").replace("]", "").split(",") if text is not None else list(value)
        roi = [float(v) for v in parts]
    except (TypeError, ValueError):
        roi = []
    if len(roi) != 4 or not all(v == v and abs(v) != float("inf") for v in roi) or roi[2] <= roi[0] or roi[3] <= roi[1]:
        raise HTTPException(
            status_code=400, detail=f"roi {value!r} is not a box [x0, y0, x1, y1] with x1 > x0 and y1 > y0 (pixels)"
        )
    return roi


def inferable_image(image: object, datastore) -> None:
    """Refuse an ``image`` that is neither a datastore id nor the endpoint's own upload (a temporary file)."""
    if not isinstance(image, str) or not image:
        raise HTTPException(status_code=400, detail="give an image id of the datastore, or upload the file")
    if image in set(datastore.list_images()) or is_own_upload(image):
        return
    raise HTTPException(
        status_code=404,
        detail=f"image {redact(image)!r} is not in the datastore (ids only; paths are refused): add it with "
        "PUT /datastore/image, then pass its id, or upload the file with this request",
    )


def _readable_image(path: str, what: str) -> tuple[int, int]:
    """(width, height) of an uploaded image file, or a 400 with the reader's reason."""
    from bundle.data.readers import ImageReadError, read_image

    try:
        height, width = read_image(path).array.shape
    except ImageReadError as error:
        reason = redact(str(error).split(": ", 1)[-1])
        raise HTTPException(status_code=400, detail=f"the uploaded {what} cannot be used: {reason}") from None
    return width, height


def _answer_4xx(endpoint):
    """Wrap a MONAI Label endpoint: bad parameters (JSON, ids) become a 400 with the reason; uploads go on failure."""

    @functools.wraps(endpoint)
    def guarded(*args, **kwargs):
        try:
            return endpoint(*args, **kwargs)
        except HTTPException:
            discard()
            raise
        except (ValueError, KeyError, TypeError) as error:  # json.loads(params), an unknown key, a wrong type
            discard()
            raise HTTPException(
                status_code=400,
                detail=f"bad request ({type(error).__name__}: {redact(str(error))}); params must be a JSON object, "
                "image an id of the datastore, tag a plain name",
            ) from None
        except BaseException:
            discard()
            raise

    guarded.fetal_nt_guarded = True
    return guarded


def guard_endpoints() -> None:
    """Put :func:`_answer_4xx` around the endpoints that take uploads or JSON ``params`` (in place, once)."""
    from monailabel.endpoints import datastore, infer

    for module, names in (
        (infer, ("run_inference",)),
        (datastore, ("add_image", "save_label", "update_image_info", "update_label_info")),
    ):
        for name in names:
            endpoint = getattr(module, name)
            if not getattr(endpoint, "fetal_nt_guarded", False):
                setattr(module, name, _answer_4xx(endpoint))


def guard_datastore(store) -> None:
    """Wrap ``store.add_image`` and ``store.save_label`` with the checks above (in place)."""
    add_image, save_label = store.add_image, store.save_label

    def checked_add_image(image_id: str, image_filename: str, image_info: dict) -> str:
        plain_name(image_id, "image id")
        _readable_image(image_filename, "image")
        return add_image(image_id, image_filename, image_info)

    def checked_save_label(image_id: str, label_filename: str, label_tag: str, label_info: dict) -> str:
        plain_name(image_id, "image id")
        plain_name(label_tag, "label tag")
        if image_id not in set(store.list_images()):
            raise HTTPException(status_code=404, detail=f"image {image_id!r} is not in the datastore; add it first")
        size = _readable_image(label_filename, "label")
        image_size = _readable_image(store.get_image_uri(image_id), "image")
        if size != image_size:
            raise HTTPException(
                status_code=400,
                detail=f"the label is {size[0]}x{size[1]} but image {image_id!r} is "
                f"{image_size[0]}x{image_size[1]}; draw the NT box mask on the image itself",
            )
        return save_label(image_id, label_filename, label_tag, label_info)

    store.add_image, store.save_label = checked_add_image, checked_save_label


__all__ = ["plain_name", "parse_roi", "inferable_image", "guard_datastore", "guard_endpoints"]
