"""HTML reader: one interleaved document per ``.html`` / ``.htm`` file.

The body is walked in document order; with ``content: main`` (the default) only the page's main
content when it marks one (``<main>``, ``role="main"``, or its only ``<article>``), so a
documentation site's menus, sidebars and footers stay out. Text blocks (p, h1-h6, li, pre,
blockquote, td, th, figcaption, ... and loose text between container elements) become ``text``
segments, with
whitespace collapsed (``pre`` keeps its own); each ``<img>`` becomes a ``media`` segment pointing
at an image media ref with role ``inline``. script/style/nav/noscript/template are skipped.

Image sources: ``src``, or for a lazy-loading page whose ``src`` is a data: placeholder
``data-src`` / ``data-original`` / ``data-lazy-src``, or the first ``srcset`` candidate. A
relative one resolves against the HTML file's folder,
a root-relative one (``/img/a.png``) against ``site_root``; the path need not exist (probing flags
missing media later). ``http(s)://`` and other URLs stay as they are (``//host/x`` becomes
``https://host/x``). ``data:`` URIs are not media: they are counted in ``meta["data_uri_images"]``.

Where things go: ``text`` = the text blocks joined by blank lines; ``meta["title"]`` = the
``<title>``; ``meta["alt_texts"]`` = the alt text of each image, aligned with ``media`` (None where
an image has none); ``language`` = ``<html lang>``. Layout: interleaved, or text when the page has
no images. A file that cannot be read, decoded (strictly: BOM, then ``<meta charset>``, then UTF-8,
unless ``encoding`` is set) or parsed is quarantined (UNREADABLE).

Payload: ``{"files": [...], "site_root": str | None}``. Locator: the file's absolute path.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
from collections.abc import Iterator
from typing import Any, ClassVar, Literal
from urllib.parse import unquote

from pydantic import Field

from operators.base import Params, Reader, Unit
from operators.ingest._common import chunked, is_url, list_files, modalities_of
from operators.registry import register_reader
from schemas.enums import Layout, Modality, ReasonCode
from schemas.record import new_media

__all__ = ["HtmlParams", "HtmlReader"]

log = logging.getLogger(__name__)

_SUFFIXES = (".html", ".htm")
# fmt: off
_BLOCKS = frozenset({
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "pre", "blockquote", "td", "th", "figcaption", "caption",
    "dt", "dd", "div", "section", "article", "main", "aside", "header", "footer", "figure", "table", "tr",
    "thead", "tbody", "tfoot", "ul", "ol", "dl", "form", "address", "details", "summary", "hr", "body", "html",
})
# fmt: on
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


class HtmlParams(Params):
    encoding: str | None = Field(
        None, description="decode every file with this encoding (default: BOM, then <meta charset>, then UTF-8)"
    )
    site_root: str | None = Field(
        None,
        description="folder that root-relative image paths (/img/a.png) resolve against "
        "(default: the source folder; for a file or glob source, each file's folder)",
    )
    skip_tags: list[str] = Field(
        default_factory=lambda: ["script", "style", "nav", "noscript", "template"],
        description="elements whose content is not document text",
    )
    content: Literal["main", "body"] = Field(
        "main",
        description="main: read only the page's main content when it marks one (<main>, role=main, or a single "
        "<article>), leaving out site menus, sidebars, headers and footers; body: the whole body",
    )


def _sniff_encoding(raw: bytes) -> str:
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            return enc
    m = _CHARSET.search(raw[:4096])
    if m:
        try:
            return codecs.lookup(m.group(1).decode("ascii")).name
        except LookupError:
            log.debug("unknown charset %r, trying UTF-8", m.group(1))
    return "utf-8"


class _Walker:
    """Collects segments and image refs from an lxml element tree, in document order."""

    def __init__(self, folder: str, site_root: str, skip: set[str]) -> None:
        self.folder, self.site_root, self.skip = folder, site_root, skip
        self.segments: list[dict[str, Any]] = []
        self.media: list[dict[str, Any]] = []
        self.alts: list[str | None] = []
        self.data_uris = 0
        self.no_src = 0
        self._buf: list[str] = []

    def flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        self._buf = []
        if text:
            self._text(text)

    def _text(self, text: str) -> None:
        self.segments.append({"kind": "text", "text": text, "media_index": None})

    def walk(self, el: Any) -> None:
        if not isinstance(el.tag, str):  # comment or processing instruction: only its tail counts
            return
        tag = el.tag.lower()
        if tag in self.skip:
            return
        if tag == "img":
            self.flush()
            self._image(el)
            return
        if tag == "pre":
            self.flush()
            text = el.text_content().strip("\n")
            if text.strip():
                self._text(text)
            return
        block = tag in _BLOCKS
        if block:
            self.flush()
        if el.text:
            self._buf.append(el.text)
        for child in el:
            self.walk(child)
            if child.tail:
                self._buf.append(child.tail)
        if block:
            self.flush()
        elif tag == "br":
            self._buf.append(" ")

    def _image(self, el: Any) -> None:
        src = _img_source(el)
        if not src:
            self.no_src += 1
            return
        if src[:5].lower() == "data:":
            self.data_uris += 1
            return
        self.segments.append({"kind": "media", "text": None, "media_index": len(self.media)})
        self.media.append(new_media(Modality.IMAGE.value, self._resolve(src), role="inline"))
        alt = el.get("alt")
        self.alts.append(alt.strip() if alt is not None else None)

    def _resolve(self, src: str) -> str:
        if src.startswith("//"):
            return "https:" + src
        if is_url(src):
            return src
        path = unquote(src.split("#", 1)[0].split("?", 1)[0])
        if path.startswith("/"):
            return os.path.normpath(os.path.join(self.site_root, path.lstrip("/")))
        return os.path.normpath(os.path.join(self.folder, path))


def _main_content(doc: Any) -> Any | None:
    """The element a page marks as its main content: <main>, else role="main", else its only <article>."""
    for query in ("//main", "//*[@role='main']"):
        found = doc.xpath(query)
        if found:
            return found[0]
    articles = doc.xpath("//article")
    return articles[0] if len(articles) == 1 else None


def _img_source(el: Any) -> str:
    """The real image of an <img>: ``src``, unless it is a data: placeholder of a lazy-loading page
    (then ``data-src``, ``data-original`` or ``data-lazy-src``), else the first ``srcset`` /
    ``data-srcset`` candidate; a data: ``src`` only when nothing else is given."""
    src = (el.get("src") or "").strip()
    if src and src[:5].lower() != "data:":
        return src
    for attr in ("data-src", "data-original", "data-lazy-src"):
        lazy = (el.get(attr) or "").strip()
        if lazy:
            return lazy
    for attr in ("srcset", "data-srcset"):
        first = (el.get(attr) or "").split(",")[0].strip().split(" ")[0]
        if first:
            return first
    return src


@register_reader
class HtmlReader(Reader[HtmlParams]):
    """HTML pages -> interleaved text-and-image documents (images referenced, not fetched)."""

    name: ClassVar[str] = "html"
    produces: ClassVar[tuple[str, ...]] = ("text", "image")

    def extra_roots(self) -> list[str]:
        return [os.path.abspath(os.path.expanduser(self.params.site_root))] if self.params.site_root else []

    def plan(self) -> Iterator[Unit]:
        single = os.path.isfile(self.path)
        files = [f for f in list_files(self.path, _SUFFIXES) if single or f.lower().endswith(_SUFFIXES)]
        root = self.params.site_root
        if root:
            root = os.path.abspath(os.path.expanduser(root))
        elif os.path.isdir(self.path):
            root = os.path.abspath(self.path)
        for chunk in chunked(files, self.units_per_file):
            yield self.unit({"files": chunk, "site_root": root})

    def read(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for path in payload["files"]:
            yield self.isolated(path, lambda p=path: self._document(p, payload.get("site_root")))

    def _document(self, path: str, site_root: str | None) -> dict[str, Any]:
        import lxml.etree
        import lxml.html

        folder = os.path.dirname(path)
        try:
            with open(path, "rb") as f:
                raw = f.read()
            encoding = self.params.encoding or _sniff_encoding(raw)
            text = raw.decode(encoding)
            parser = lxml.html.HTMLParser(encoding="utf-8")
            doc = lxml.html.document_fromstring(text.encode("utf-8"), parser=parser)
            walker = _Walker(folder, site_root or folder, {t.lower() for t in self.params.skip_tags})
            body = doc.find("body")
            root = _main_content(doc) if self.params.content == "main" else None
            walker.walk(root if root is not None else body if body is not None else doc)
            walker.flush()
        except (OSError, ValueError, LookupError, lxml.etree.LxmlError, RecursionError) as e:
            log.debug("cannot read %s", path, exc_info=True)
            return self.broken(path, ReasonCode.UNREADABLE, f"{type(e).__name__}: {e}")
        title = doc.findtext(".//title")
        meta: dict[str, Any] = {}
        if title and title.strip():
            meta["title"] = " ".join(title.split())
        if walker.media:
            meta["alt_texts"] = walker.alts
        if walker.data_uris:
            meta["data_uri_images"] = walker.data_uris
        if walker.no_src:
            meta["img_without_src"] = walker.no_src
        texts = [s["text"] for s in walker.segments if s["kind"] == "text"]
        return self.record(
            path,
            media=walker.media,
            modalities=modalities_of(walker.media, bool(texts)),
            layout=Layout.INTERLEAVED.value if walker.media else Layout.TEXT.value,
            text="\n\n".join(texts) or None,
            interleaved=walker.segments,
            language=(doc.get("lang") or "").strip() or None,
            meta=meta or None,
        )
