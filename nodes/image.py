"""Reading images: `image.load`."""

from __future__ import annotations

from samflow.engine.context import ItemContext
from samflow.engine.node import Input, Node
from samflow.engine.registry import register
from samflow.engine.types import FilePath, Image


@register("image.load")
class LoadImage(Node):
    """Read an image file (PNG, JPEG, BMP, TIFF, WebP...) as RGB; a file that is not an image fails clearly."""

    inputs = {"path": Input(FilePath, doc="the image file")}
    outputs = {"image": Image}

    def run(self, ctx: ItemContext, path: FilePath) -> dict[str, Image]:
        return {"image": Image.load(path.path)}
