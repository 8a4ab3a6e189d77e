"""Is a media file what its name says, and is all of it there? Cheap checks on the bytes.

The probe asks three questions before it trusts a header (a header can state 3.0 s for a file
whose second half was never written):

- ``sniff(head)``: what the first bytes say the file is (PNG, JPEG, MP4, Matroska, WAV, FLAC,
  Ogg, MP3, ...) and which modalities that type can carry. A PNG named ``.mp4`` is a wrong type,
  not a video with a missing duration.
- ``file_end(f, kind, size)``: for formats that state their own length, whether the bytes are
  all there, exactly and without decoding: the top-level boxes of ISO-BMFF (MP4, MOV, M4A), the
  RIFF chunks of WAV, AVI and WebP, the FORM of AIFF, the Matroska/WebM segment, the last Ogg
  page, the PNG chunks up to IEND, JPEG's end-of-image marker, GIF's trailer. A structure that
  cannot be read is "not judged" (``None``): the decoders decide then, so an unusual but
  complete file is never called truncated here.
- ``stream_end(container, stream, header_s)``: for video and audio, seek near the end that the
  header states and demux (and, for audio, decode) to the real end of the data. When data stops
  well before the stated duration, the row's durations would be wrong in every token and hour
  count; the result says where the data ends.

Nothing here imports Ray or knows a record; the probe maps the answers to reasons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import IO, Any

from operators.media_io import is_svg

__all__ = ["FileType", "StreamEnd", "Truncation", "file_end", "sniff", "stream_end"]

#: bytes read from the start of a file to sniff its type
SNIFF_BYTES = 8192
_CHUNK = 1 << 20
_MAX_WALK = 200_000  # boxes, chunks or segments walked before a structure is "not judged"
_GIF_MAX_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class FileType:
    """A sniffed file type: a human name, the modalities it can carry, and the key of its end check."""

    name: str
    modalities: frozenset[str]
    key: str = ""

    def describe(self) -> str:
        if not self.modalities:
            return self.name
        kinds = " or ".join(sorted(self.modalities))
        return f"{self.name} ({kinds})"


@dataclass(frozen=True, slots=True)
class Truncation:
    """The structure of a file declares more bytes than the file holds."""

    #: bytes in the file
    present: int
    #: bytes the structure declares (None when it cannot say, e.g. a missing end marker)
    needed: int | None
    #: what says so, in words
    what: str
    #: for PCM (WAV): seconds the header states and seconds the data holds
    declared_s: float | None = None
    data_s: float | None = None

    def describe(self) -> str:
        tail = f"{self.what}; the file has {self.present} bytes"
        if self.needed is not None:
            tail += f" of {self.needed}"
        return tail


_IMAGE, _VIDEO, _AUDIO = frozenset({"image"}), frozenset({"video"}), frozenset({"audio"})
_AV = frozenset({"video", "audio"})
_NONE: frozenset[str] = frozenset()

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_QT_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
_BMP_DIB_SIZES = {12, 40, 52, 56, 64, 108, 124}

# MPEG audio frame header tables (kbit/s; index 0 "free" and 15 "bad" are rejected)
_MP3_BITRATES = {
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


# ----------------------------------------------------------------------------- sniffing


def _mpeg_audio_frame_len(h: bytes) -> int | None:
    """Length in bytes of the MPEG audio frame whose header starts ``h``, or None if it is not one."""
    if len(h) < 4 or h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return None
    version_bits, layer_bits = (h[1] >> 3) & 3, (h[1] >> 1) & 3
    bitrate_idx, rate_idx, padding = h[2] >> 4, (h[2] >> 2) & 3, (h[2] >> 1) & 1
    if version_bits == 1 or layer_bits == 0 or bitrate_idx in (0, 15) or rate_idx == 3:
        return None
    layer = 4 - layer_bits
    version = 1 if version_bits == 3 else 2
    bitrate = _MP3_BITRATES[(version, layer if version == 1 or layer == 1 else 2)][bitrate_idx] * 1000
    rate = _MP3_RATES[version_bits][rate_idx]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    coef = 144 if layer == 2 or version == 1 else 72
    return coef * bitrate // rate + padding


def _adts_frame_len(h: bytes) -> int | None:
    if len(h) < 7 or h[0] != 0xFF or (h[1] & 0xF6) != 0xF0:
        return None
    length = ((h[3] & 3) << 11) | (h[4] << 3) | (h[5] >> 5)
    return length if length >= 7 else None


def _frames_chain(head: bytes, frame_len: Any) -> bool:
    """A frame header at 0 whose successor (when the head reaches it) is a frame header too."""
    n = frame_len(head)
    if n is None:
        return False
    return len(head) < n + 4 or frame_len(head[n:]) is not None


def _ogg(head: bytes) -> FileType:
    page = head[:512]
    if b"OpusHead" in page:
        return FileType("Ogg Opus", _AUDIO, "ogg")
    if b"\x01vorbis" in page:
        return FileType("Ogg Vorbis", _AUDIO, "ogg")
    if b"\x7fFLAC" in page:
        return FileType("Ogg FLAC", _AUDIO, "ogg")
    if b"Speex   " in page:
        return FileType("Ogg Speex", _AUDIO, "ogg")
    if b"\x80theora" in page:
        return FileType("Ogg Theora", _AV, "ogg")
    return FileType("Ogg", _AV, "ogg")


def _matroska(head: bytes) -> FileType:
    m = re.search(rb"\x42\x82[\x80-\xff](webm|matroska)", head[:256])
    if m and m.group(1) == b"webm":
        return FileType("WebM", _AV, "matroska")
    return FileType("Matroska", _AV, "matroska")


def _isobmff(head: bytes) -> FileType:
    brands = [head[8:12]] + [head[i : i + 4] for i in range(16, min(len(head), int.from_bytes(head[:4], "big")), 4)]
    if head[8:12] in _AVIF_BRANDS or (head[8:12] in (b"mif1", b"msf1") and any(b in _AVIF_BRANDS for b in brands)):
        return FileType("AVIF", _IMAGE)
    if head[8:12] in _HEIF_BRANDS:
        return FileType("HEIF", _IMAGE)
    if head[8:12] == b"qt  ":
        return FileType("QuickTime", _AV, "isobmff")
    if head[8:12] in _AUDIO_BRANDS:
        return FileType("MP4 audio (M4A)", _AV, "isobmff")
    if head[8:11] == b"3gp" or head[8:11] == b"3g2":
        return FileType("3GP", _AV, "isobmff")
    return FileType("MP4", _AV, "isobmff")


def _riff(head: bytes) -> FileType | None:
    form = head[8:12]
    if form == b"WEBP":
        return FileType("WebP", _IMAGE, "webp")
    if form == b"WAVE":
        return FileType("WAV", _AUDIO, "wav")
    if form == b"AVI ":
        return FileType("AVI", _VIDEO, "avi")
    return None


def _after_id3(head: bytes) -> FileType:
    """An ID3v2 tag comes before MP3 (and sometimes AAC or FLAC) audio: sniff what follows it."""
    if len(head) >= 10:
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
        end = 10 + size + (10 if head[5] & 0x10 else 0)
        inner = sniff(head[end:]) if end < len(head) - 4 else None
        if inner is not None and "audio" in inner.modalities:
            return inner
    return FileType("MP3 (ID3-tagged)", _AUDIO)


def _text_document(head: bytes) -> FileType | None:
    start = head[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return FileType("HTML page", _NONE)
    return None


def sniff(head: bytes) -> FileType | None:
    """The type the first bytes of a file say it is; None when no signature matches."""
    if len(head) < 4:
        return None
    magic = (
        (b"\x89PNG\r\n\x1a\n", FileType("PNG", _IMAGE, "png")),
        (b"\xff\xd8\xff", FileType("JPEG", _IMAGE, "jpeg")),
        (b"GIF87a", FileType("GIF", _IMAGE, "gif")),
        (b"GIF89a", FileType("GIF", _IMAGE, "gif")),
        (b"II*\x00", FileType("TIFF", _IMAGE)),
        (b"MM\x00*", FileType("TIFF", _IMAGE)),
        (b"8BPS", FileType("Photoshop PSD", _IMAGE)),
        (b"\x00\x00\x00\x0cjP  ", FileType("JPEG 2000", _IMAGE)),
        (b"\xff\x4f\xff\x51", FileType("JPEG 2000", _IMAGE)),
        (b"\x00\x00\x00\x0cJXL ", FileType("JPEG XL", _IMAGE)),
        (b"\xff\x0a", FileType("JPEG XL", _IMAGE)),
        (b"fLaC", FileType("FLAC", _AUDIO)),
        (b".snd", FileType("Sun AU", _AUDIO)),
        (b"#!AMR", FileType("AMR", _AUDIO)),
        (b"caff", FileType("Core Audio (CAF)", _AUDIO)),
        (b"wvpk", FileType("WavPack", _AUDIO)),
        (b"MAC ", FileType("Monkey's Audio", _AUDIO)),
        (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", FileType("ASF (WMV/WMA)", _AV)),
        (b"FLV\x01", FileType("FLV", _AV)),
        (b"\x00\x00\x01\xba", FileType("MPEG program stream", _AV)),
        (b"\x00\x00\x01\xb3", FileType("MPEG video", _VIDEO)),
        (b"%PDF-", FileType("PDF document", _NONE)),
        (b"PK\x03\x04", FileType("ZIP archive", _NONE)),
        (b"\x1f\x8b", FileType("gzip archive", _NONE)),
        (b"7z\xbc\xaf\x27\x1c", FileType("7z archive", _NONE)),
        (b"\x28\xb5\x2f\xfd", FileType("zstd archive", _NONE)),
    )
    for prefix, kind in magic:
        if head.startswith(prefix):
            return kind
    tag = head[:4]
    if tag == b"RIFF" and len(head) >= 12:
        return _riff(head)
    if tag in (b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return FileType("WAV (RF64)", _AUDIO)
    if tag == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return FileType("AIFF", _AUDIO, "aiff")
    if tag == b"OggS":
        return _ogg(head)
    if tag == b"\x1a\x45\xdf\xa3":
        return _matroska(head)
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _isobmff(head)
    if len(head) >= 8 and head[4:8] in _QT_ATOMS and int.from_bytes(head[:4], "big") >= 8:
        return FileType("QuickTime", _AV, "isobmff")
    if head[0] == 0x47 and len(head) > 376 and head[188] == 0x47 and head[376] == 0x47:
        return FileType("MPEG-TS", _AV)
    if head.startswith(b"BM") and head[6:10] == b"\0\0\0\0" and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return FileType("BMP", _IMAGE)
    if head.startswith(b"\x00\x00\x01\x00") and 0 < int.from_bytes(head[4:6], "little") < 256 and head[9] == 0:
        return FileType("ICO", _IMAGE, "ico")
    if re.match(rb"P[1-7]\s", head):
        return FileType("Netpbm", _IMAGE)
    if is_svg(head):
        return FileType("SVG", _IMAGE)
    if head.startswith(b"ID3"):
        return _after_id3(head)
    if _frames_chain(head, _adts_frame_len):
        return FileType("AAC (ADTS)", _AUDIO)
    if _frames_chain(head, _mpeg_audio_frame_len):
        return FileType("MP3", _AUDIO)
    return _text_document(head)


# ----------------------------------------------------------------------------- structure: do the bytes end where they say


def _read_at(f: IO[bytes], pos: int, n: int) -> bytes:
    f.seek(pos)
    return f.read(n)


def _find(f: IO[bytes], needle: bytes, start: int, end: int) -> int | None:
    """First offset of ``needle`` in [start, end), read in bounded chunks."""
    pos = start
    while pos < end:
        block = _read_at(f, pos, min(_CHUNK, end - pos))
        if not block:
            return None
        i = block.find(needle)
        if i >= 0:
            return pos + i
        if len(block) < len(needle):
            return None
        pos += len(block) - len(needle) + 1
    return None


def _printable(tag: bytes) -> bool:
    return len(tag) == 4 and all(32 <= c < 127 for c in tag)


def _jpeg_end(f: IO[bytes], size: int) -> Truncation | None:
    pos = 2
    for _ in range(_MAX_WALK):
        b = _read_at(f, pos, 4)
        if len(b) < 2:
            return Truncation(
                size, None, f"the JPEG ends at byte {size} inside its header segments, before any image data"
            )
        if b[0] != 0xFF:
            return None  # not a marker where one should be: the decoder judges
        marker = b[1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xD9:
            return None  # an end before any scan: not a truncation
        if len(b) < 4:
            return Truncation(size, None, f"the JPEG ends at byte {size} inside a segment header")
        end = pos + 2 + (b[2] << 8 | b[3])
        if end > size:
            return Truncation(size, end, f"the JPEG segment FF{marker:02X} at byte {pos} ends at byte {end}")
        if marker == 0xDA:  # start of scan: the entropy-coded data follows, then EOI
            if _read_at(f, size - 2, 2) == b"\xff\xd9" and size - 2 >= end:
                return None
            # FFD9 never occurs inside entropy-coded data: the first one after the scan header is the end
            if _find(f, b"\xff\xd9", end, size) is not None:
                return None  # data after the end marker (a trailer, a motion-photo video): the image is whole
            return Truncation(size, None, "no JPEG end-of-image marker (FFD9) after the image data: the end is missing")
        pos = end
    return None


_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _png_end(f: IO[bytes], size: int) -> Truncation | None:
    if size >= 20 and _read_at(f, size - 12, 12) == _IEND:
        return None
    pos = 8
    last = "signature"
    for _ in range(_MAX_WALK):
        hdr = _read_at(f, pos, 8)
        if len(hdr) < 8:
            return Truncation(size, None, f"no PNG IEND chunk: the data ends at byte {size}, after the {last}")
        length, ctype = int.from_bytes(hdr[:4], "big"), hdr[4:8]
        if not ctype.isalpha():
            return None  # not a chunk: the decoder judges
        end = pos + 12 + length
        if ctype == b"IEND" and end <= size:
            return None  # bytes after IEND are ignored by every reader
        if end > size:
            return Truncation(
                size, end, f"the PNG {ctype.decode()} chunk at byte {pos} ends at byte {end}, no IEND chunk"
            )
        last = f"{ctype.decode()} chunk at byte {pos}"
        pos = end
    return None


def _gif_end(f: IO[bytes], size: int) -> Truncation | None:
    if size > _GIF_MAX_BYTES:
        return None
    data = _read_at(f, 0, size)
    n = len(data)
    cut = Truncation(size, None, "the GIF ends before its trailer (3B): the end is missing")

    def sub_blocks(p: int) -> int | None:
        while p < n:
            length = data[p]
            p += 1 + length
            if length == 0:
                return p
        return None

    if n < 13:
        return cut
    p = 13
    if data[10] & 0x80:
        p += 3 * (2 ** ((data[10] & 7) + 1))
    for _ in range(_MAX_WALK):
        if p >= n:
            return cut
        block = data[p]
        if block == 0x3B:
            return None
        if block == 0x21:
            q = sub_blocks(p + 2)
        elif block == 0x2C:
            if p + 10 > n:
                return cut
            flags = data[p + 9]
            p += 10 + (3 * (2 ** ((flags & 7) + 1)) if flags & 0x80 else 0)
            q = sub_blocks(p + 1)
        else:
            return None  # not a block: readers stop here, so do we
        if q is None:
            return cut
        p = q
    return None


def _riff_size_end(f: IO[bytes], size: int, name: str) -> Truncation | None:
    """RIFF files (AVI, WebP) and their OpenDML continuations: each top-level chunk's size must fit."""
    pos = 0
    for _ in range(_MAX_WALK):
        if pos >= size or size - pos < 8:
            return None
        hdr = _read_at(f, pos, 8)
        if hdr[:4] not in (b"RIFF", b"LIST", b"JUNK") and pos > 0:
            return None  # trailing bytes that are not RIFF: not ours to judge
        length = int.from_bytes(hdr[4:8], "little")
        if length in (0, 0xFFFFFFFF):
            return None  # written while streaming: "to the end of the file"
        end = pos + 8 + length + (length & 1)
        if end > size + (length & 1):
            return Truncation(
                size, end, f"the {name} {hdr[:4].decode('latin-1')} chunk at byte {pos} declares {length} bytes"
            )
        pos = end
    return None


def _wav_end(f: IO[bytes], size: int) -> Truncation | None:
    pos, byte_rate = 12, 0
    for _ in range(_MAX_WALK):
        hdr = _read_at(f, pos, 8)
        if len(hdr) < 8:
            return Truncation(size, None, f"the WAV ends at byte {size} before its data chunk")
        cid, length = hdr[:4], int.from_bytes(hdr[4:8], "little")
        if not _printable(cid):
            return None
        if cid == b"fmt ":
            fmt = _read_at(f, pos + 8, 16)
            if len(fmt) >= 12:
                byte_rate = int.from_bytes(fmt[8:12], "little")
        if cid == b"data":
            if length in (0, 0xFFFFFFFF):
                return None  # a streamed WAV: the data runs to the end of the file
            present = size - pos - 8
            if present >= length:
                return None
            declared_s = length / byte_rate if byte_rate else None
            data_s = present / byte_rate if byte_rate else None
            return Truncation(
                size, pos + 8 + length, f"the WAV data chunk declares {length} bytes of samples, {present} present",
                declared_s, data_s,
            )  # fmt: skip
        end = pos + 8 + length + (length & 1)
        if end > size:
            return Truncation(
                size, end, f"the WAV {cid.decode()} chunk at byte {pos} ends past the file, before the data chunk"
            )
        pos = end
    return None


def _aiff_end(f: IO[bytes], size: int) -> Truncation | None:
    length = int.from_bytes(_read_at(f, 4, 4), "big")
    if length in (0, 0xFFFFFFFF) or 8 + length <= size + (length & 1):
        return None
    return Truncation(size, 8 + length, f"the AIFF FORM chunk declares {length} bytes")


def _ico_end(f: IO[bytes], size: int) -> Truncation | None:
    """An icon's directory states where each of its images lies: the last must end inside the file."""
    count = int.from_bytes(_read_at(f, 4, 2), "little")
    if count == 0:
        return None
    entries = _read_at(f, 6, 16 * count)
    if len(entries) < 16 * count:
        return Truncation(size, 6 + 16 * count, "the ICO directory is cut")
    end = max(
        int.from_bytes(e[8:12], "little") + int.from_bytes(e[12:16], "little")
        for e in (entries[i : i + 16] for i in range(0, len(entries), 16))
    )
    return Truncation(size, end, f"the ICO directory places an image up to byte {end}") if end > size else None


def _isobmff_end(f: IO[bytes], size: int) -> Truncation | None:
    pos = 0
    seen: set[bytes] = set()
    for _ in range(_MAX_WALK):
        if size - pos < 8:
            break
        hdr = _read_at(f, pos, 16)
        length, btype = int.from_bytes(hdr[:4], "big"), hdr[4:8]
        if not _printable(btype):
            break  # padding or junk after the last box: not judged
        if length == 1:
            if len(hdr) < 16:
                return Truncation(size, None, f"the {btype.decode()} box at byte {pos} is cut inside its header")
            length = int.from_bytes(hdr[8:16], "big")
        elif length == 0:  # the last box runs to the end of the file
            seen.add(btype)
            break
        if length < 8:
            break
        end = pos + length
        if end > size:
            name = btype.decode()
            return Truncation(size, end, f"the {name} box at byte {pos} declares {length} bytes, {size - pos} present")
        seen.add(btype)
        pos = end
    if b"mdat" in seen and not seen & {b"moov", b"moof"}:
        return Truncation(
            size, None, "media data (mdat) but no moov box, the index written at the end: the end is missing"
        )
    return None


def _vint(b: bytes, i: int) -> tuple[int, int, bool] | None:
    """An EBML variable-size integer at ``b[i]``: (value, length, unknown-size)."""
    if i >= len(b) or b[i] == 0:
        return None
    length = 8 - b[i].bit_length() + 1
    if i + length > len(b):
        return None
    value = b[i] & (0xFF >> length)
    for c in b[i + 1 : i + length]:
        value = value << 8 | c
    return value, length, value == (1 << (7 * length)) - 1


def _matroska_end(f: IO[bytes], size: int) -> Truncation | None:
    head = _read_at(f, 0, 64)
    v = _vint(head, 4)
    if v is None:
        return None
    seg = 4 + v[1] + v[0]
    hdr = _read_at(f, seg, 12)
    if hdr[:4] != b"\x18\x53\x80\x67":
        return None
    s = _vint(hdr, 4)
    if s is None or s[2]:
        return None  # unknown size (a live recording): the stream check decides
    end = seg + 4 + s[1] + s[0]
    if end > size:
        return Truncation(size, end, f"the Matroska segment at byte {seg} declares {s[0]} bytes")
    return None


def _ogg_page_len(b: bytes, i: int) -> int | None:
    """Length of the Ogg page whose header starts at ``b[i]``, None if the header is not all in ``b``."""
    if i + 27 > len(b) or b[i + 4] != 0:
        return None
    nsegs = b[i + 26]
    if i + 27 + nsegs > len(b):
        return None
    return 27 + nsegs + sum(b[i + 27 : i + 27 + nsegs])


def _ogg_end(f: IO[bytes], size: int) -> Truncation | None:
    """Walk the pages in the tail of the file from one whose successor checks out to the end."""
    start = max(0, size - 2 * 65536)
    tail = _read_at(f, start, size - start)
    i = tail.find(b"OggS")
    while i >= 0:
        n = _ogg_page_len(tail, i)
        if n is not None and (i + n == len(tail) or tail[i + n : i + n + 4] == b"OggS"):
            break  # a real page: its successor starts where it ends
        i = tail.find(b"OggS", i + 1)
    if i < 0:
        return None
    for _ in range(_MAX_WALK):
        rest = len(tail) - i
        if rest == 0:
            return None
        if tail[i : i + 4] != b"OggS"[: min(4, rest)]:
            return None  # bytes after the last page that are not a page: not judged
        n = _ogg_page_len(tail, i)
        if n is None:
            return Truncation(size, None, f"the Ogg page at byte {start + i} is cut inside its header")
        if i + n > len(tail):
            return Truncation(size, start + i + n, f"the last Ogg page at byte {start + i} declares {n} bytes")
        i += n
    return None


_END_CHECKS = {
    "jpeg": _jpeg_end,
    "png": _png_end,
    "gif": _gif_end,
    "ico": _ico_end,
    "webp": lambda f, size: _riff_size_end(f, size, "WebP"),
    "avi": lambda f, size: _riff_size_end(f, size, "AVI"),
    "wav": _wav_end,
    "aiff": _aiff_end,
    "isobmff": _isobmff_end,
    "matroska": _matroska_end,
    "ogg": _ogg_end,
}


def file_end(f: IO[bytes], kind: FileType | None, size: int) -> Truncation | None:
    """A Truncation when the file's own structure says bytes are missing at the end; None when the
    structure is whole or cannot be judged from the bytes (the decoders decide then). Leaves ``f``
    at offset 0."""
    check = _END_CHECKS.get(kind.key) if kind is not None else None
    if check is None:
        return None
    try:
        return check(f, size)
    except (IndexError, ValueError, OverflowError):  # a structure too odd to walk: not judged
        return None
    finally:
        f.seek(0)


# ----------------------------------------------------------------------------- streams: where the data really ends


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Where a stream's data ends, against the duration its header states (both from the stream's start)."""

    header_s: float
    #: end of the last packet that could be read (audio: of the last decoded sample); None: none could be
    data_end_s: float | None
    truncated: bool
    #: False when packets near the end were read but none of them decodes (a zero-filled or garbage tail)
    decodes: bool = True
    #: why, in words (a cut or undecodable last packet)
    note: str = ""

    def describe(self) -> str:
        where = (
            f"data ends at {self.data_end_s:.3f}s"
            if self.data_end_s is not None
            else "no data could be read near the end"
        )
        out = f"the header says {self.header_s:.3f}s, {where}"
        return f"{out} ({self.note})" if self.note else out


#: codecs whose header states the exact sample count, so a short end is a cut, however short
_EXACT_CODECS = ("flac", "alac", "wavpack", "tta", "pcm_")
#: packets decoded after a seek, at most, before a video tail counts as "does not decode"
_VIDEO_DECODE_PACKETS = 48


class _Tail:
    """What demuxing (and decoding) from one seek point to the end of the data saw."""

    def __init__(self) -> None:
        self.packets = 0
        self.demux_end: float | None = None
        self.decoded_end: float | None = None
        self.frames = 0
        self.tries = 0  # packets given to the decoder
        self.errors = 0  # of which the decoder refused
        self.frame_tb: float | None = None
        self.last_failed = False  # the last packet read was cut short or did not decode

    def end(self, audio: bool) -> float | None:
        return self.decoded_end if audio and self.frames else self.demux_end


def _later(a: float | None, b: float) -> float:
    return b if a is None else max(a, b)


def _seek(container: Any, stream: Any, t: float) -> bool:
    import av

    try:
        container.seek(max(0, int(t / stream.time_base)), stream=stream, backward=True, any_frame=False)
    except (av.error.FFmpegError, OverflowError, ValueError):
        return False
    return True


def _decode(tail: _Tail, frames: Any, start_s: float, rate: int) -> None:
    for frame in frames:
        tail.frames += 1
        if rate and frame.pts is not None and frame.samples:
            if tail.frame_tb is None:  # one stream's frames share a time base: convert the Fraction once
                tail.frame_tb = float(frame.time_base)
            tail.decoded_end = _later(tail.decoded_end, frame.pts * tail.frame_tb + frame.samples / rate - start_s)


def _decode_one_picture(tail: _Tail, stream: Any, pkt: Any) -> None:
    """Decode the packet a seek landed on (a keyframe) and drain the decoder, so the picture comes
    out without feeding it the frames that follow (B-frame delay): one picture decoded, not three."""
    ctx = stream.codec_context
    _decode(tail, ctx.decode(pkt), 0.0, 0)
    if not tail.frames:
        _decode(tail, ctx.decode(None), 0.0, 0)
        ctx.flush_buffers()  # leaves the draining state, for the next packet if this one gave nothing


def _read_tail(container: Any, stream: Any, start_s: float, *, decode: bool, max_packets: int | None = None) -> _Tail:
    """Demux ``stream`` from where the container was sought to the end of its data (or ``max_packets``).

    Audio packets are all decoded; video packets only until one frame comes out (a seek lands on a
    keyframe, and decoding a whole group of pictures would cost seconds on long ones)."""
    import av

    tail = _Tail()
    tb = float(stream.time_base)
    audio = stream.type == "audio"
    rate = (stream.sample_rate or 0) if audio else 0
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0 or pkt.pts is None:
                continue
            tail.packets += 1
            # a short read: the file ends inside this packet. Video: the packet is lost. Audio: what is
            # there may decode (PCM whose data size is "to the end of the file" ends on a short packet)
            short = bool(pkt.is_corrupt)
            if short and not (audio and decode):
                tail.last_failed = True
                break
            tail.last_failed = False
            if not short:
                tail.demux_end = _later(tail.demux_end, (pkt.pts + (pkt.duration or 0)) * tb - start_s)
            if decode and (audio or (tail.frames == 0 and tail.packets <= _VIDEO_DECODE_PACKETS)):
                tail.tries += 1
                try:
                    if audio:
                        _decode(tail, pkt.decode(), start_s, rate)
                    else:
                        _decode_one_picture(tail, stream, pkt)
                except av.error.FFmpegError:
                    tail.errors += 1
                    tail.last_failed = True
            if short or (max_packets is not None and tail.packets >= max_packets):
                return tail
    except av.error.FFmpegError:
        tail.last_failed = True
    return tail


def _read_from_last_data(container: Any, stream: Any, start_s: float, before_s: float) -> _Tail:
    """Nothing could be read after the seek near the end: bisect (demuxing a few packets per step)
    for the last point that still has data, then read from there to the end of the data."""
    lo, hi = 0.0, before_s
    for _ in range(16):
        if hi - lo < max(0.05, before_s / 4096):
            break
        mid = (lo + hi) / 2
        if not _seek(container, stream, start_s + mid):
            break
        step = _read_tail(container, stream, start_s, decode=False, max_packets=4)
        if step.demux_end is not None and not step.last_failed:
            lo = mid
        else:
            hi = mid
    if not _seek(container, stream, start_s + lo):
        return _Tail()
    return _read_tail(container, stream, start_s, decode=True)


def stream_end(
    container: Any, stream: Any, header_s: float | None, *, tolerance_s: float, window_s: float = 1.0
) -> StreamEnd | None:
    """Seek ``window_s`` before the end the header states and read the stream to the end of its data.

    Truncated when the data ends more than ``tolerance_s`` (and more than two frames or packets)
    before the stated duration, or, for codecs whose header states the exact sample count (FLAC,
    PCM, ALAC), when it ends short of it on a cut or undecodable last packet. None when there is
    no stated duration or the container cannot seek (not judged)."""
    if not header_s or header_s <= 0 or not stream.time_base:
        return None
    start_s = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    audio = stream.type == "audio"
    seek_s = max(0.0, header_s - window_s)
    if not _seek(container, stream, start_s + seek_s):
        return None
    tail = _read_tail(container, stream, start_s, decode=True)
    if tail.end(audio) is None:
        tail = _read_from_last_data(container, stream, start_s, seek_s)
    end = tail.end(audio)
    if end is None:
        return StreamEnd(header_s, None, True, tail.packets == 0, "no packet could be read")
    if not tail.frames and tail.tries and tail.errors == tail.tries:  # every packet refused: garbage or zeros
        return StreamEnd(header_s, tail.demux_end, False, False, "packets are there but none decodes")
    if audio:
        step = (end - seek_s) / tail.packets if tail.packets and end > seek_s else 0.0
    else:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        step = 1 / float(rate) if rate else 0.0
    gap = header_s - end
    note = "the last packet is cut or does not decode" if tail.last_failed else ""
    codec = stream.codec_context.name or ""
    cut = gap > max(tolerance_s, 2 * min(step, 1.0)) or (
        codec.startswith(_EXACT_CODECS) and tail.last_failed and gap > 0.001
    )
    return StreamEnd(header_s, end, cut, True, note)
