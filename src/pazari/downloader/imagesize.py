"""``extract_image_size``: the dimensions from the image header only, via Pillow's lazy
``Image.open`` (no pixel decoding). jpeg/png/gif as the original, plus webp."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

#: sniffed MIME type → Pillow format.
SIZED_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF",
               "image/webp": "WEBP"}


class ImageSizeError(Exception):
    pass


def image_size(source: str | bytes, mime: str) -> str | None:
    """``"<W>x<H>"`` of the file at ``source`` (or of the body ``source``) for a sized type,
    None for other types; ImageSizeError if the header does not decode."""
    fmt = SIZED_TYPES.get(mime)
    if fmt is None:
        return None
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source,
                        formats=[fmt]) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageSizeError(str(exc) or type(exc).__name__) from None
    return f"{width}x{height}"
