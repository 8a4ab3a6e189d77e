"""A small mixed demo corpus with planted problems, and a PLANTED.json that says what was planted.

``make_demo_corpus(root)`` writes image, video and audio folders with sidecar captions, HTML
documents, LLaVA / preference / trajectory / OBELICS / text JSONL manifests and a WebDataset shard.
Into them it plants exact duplicates, corrupt and truncated files, a malformed JSON line, a missing
image reference, and samples a default filter should drop (tiny images, 8 kHz audio), so an
end-to-end run can be checked against ``PLANTED.json``.

Everything is deterministic given ``seed``; ``scale`` multiplies the number of ordinary samples.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.demo import synth

__all__ = ["PLANTED_NAME", "make_demo_corpus"]

log = logging.getLogger(__name__)

PLANTED_NAME = "PLANTED.json"
#: images whose shortest side is below this are planted as "small" (a min_side filter drops them)
SMALL_SIDE = 64
#: images whose aspect ratio (long side / short side) is at least this are planted as "extreme_aspect"
EXTREME_ASPECT = 3.0
#: audio below this sample rate is planted as "low_sample_rate"
LOW_RATE = 16000

# fmt: off
_SUBJECTS = [
    "A golden retriever", "A young boy with a kite", "An elderly fisherman", "A red vintage bicycle", "A street musician",
    "A flock of seagulls", "A young woman in a yellow raincoat", "A small wooden sailboat", "A tabby cat",
    "A group of hikers", "A steaming bowl of ramen", "An old stone bridge", "A delivery cyclist",
    "A pair of running shoes", "A lighthouse", "A farmer with a wheelbarrow",
]
_ACTIONS = [
    "rests", "waits patiently", "stands alone", "is photographed from above", "moves slowly",
    "catches the last light", "is partly hidden by fog", "is framed by tall trees", "leans against a wall",
    "crosses the scene",
]
_PLACES = [
    "on a wooden porch at sunset", "beside a quiet canal", "in a crowded market square",
    "on a snowy mountain trail", "near a harbour full of boats", "in a sunlit kitchen",
    "at the edge of a wheat field", "under a railway bridge", "on a rainy city street",
    "in front of a brick warehouse", "along a sandy beach", "inside a busy train station",
]
_DETAILS = [
    "", " The colours are warm and slightly faded.", " Shallow depth of field blurs the background.",
    " A few people walk past in the distance.", " The sky is overcast and grey.",
    " Long shadows stretch to the left.",
]
_SPEECH = [
    "Good morning and welcome to the weekly news summary.", "Please remember to bring your ticket to the gate.",
    "The train to the airport leaves from platform four.", "Add two cups of flour and stir until smooth.",
    "Turn left at the second traffic light and continue straight.",
    "Thank you for calling, how can I help you today?", "The museum is open every day except Monday.",
    "Tomorrow will be cloudy with light rain in the afternoon.",
]
_TOPICS = [

    ("How to repot a houseplant", "Choose a pot slightly larger than the old one and make sure it drains well."),
    ("A short history of the bicycle", "Early bicycles had no pedals and riders pushed them along with their feet."),
    ("Baking sourdough at home", "A healthy starter should double in size within a few hours of feeding."),
    ("Visiting the northern coast", "The coastal path runs for twelve kilometres between two fishing villages."),
    ("Reading a weather map", "Lines of equal pressure, called isobars, show where the wind is strongest."),
    ("Caring for a vegetable garden", "Water early in the morning so the leaves can dry before evening."),
]
_FILLER = [
    "Most people find the first attempt harder than expected.",
    "It helps to prepare everything before starting.", "Photographs from the period show how much has changed.",
    "Small mistakes are easy to correct later.", "Local guides recommend going in spring or early autumn.",
    "The result is worth the patience it takes.",
]
_QUESTIONS = [
    ("What is shown in this image?", "{caption}"), ("Describe the scene in one sentence.", "{caption}"),
    ("What is the main subject of the picture?", "The main subject is {subject}."),
    ("Where was this photo taken?", "It appears to have been taken {place}."),
]
# fmt: on


@dataclass
class _Ctx:
    root: Path
    rng: np.random.Generator
    scale: int
    seed: int
    next_seed: int = 0
    planted: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def seed_for(self) -> int:
        """A fresh media seed: every generated file has distinct bytes unless planted as a copy."""
        self.next_seed += 1
        return self.seed * 100_003 + self.next_seed

    def pick(self, items: list[Any]) -> Any:
        return items[int(self.rng.integers(0, len(items)))]

    def caption(self) -> str:
        return f"{self.pick(_SUBJECTS)} {self.pick(_ACTIONS)} {self.pick(_PLACES)}.{self.pick(_DETAILS)}"

    def paragraph(self, lead: str) -> str:
        """A lead sentence and one to three filler sentences; never the same paragraph twice."""
        for _ in range(20):
            picks = self.rng.choice(len(_FILLER), size=int(self.rng.integers(1, 4)), replace=False)
            text = " ".join([lead, *[_FILLER[int(k)] for k in picks if _FILLER[int(k)] != lead]])
            if text not in self.seen:
                break
        else:
            text = f"{text} (Note {len(self.seen) + 1}.)"
        self.seen.add(text)
        return text

    def source(self, name: str, kind: str, path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"kind": kind, "path": path, "rows": 0, "duplicates": [], "corrupt": []}
        self.planted[name] = entry
        return entry


def _write_jsonl(path: Path, rows: list[dict[str, Any] | str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _sidecar(ctx: _Ctx, media: Path, text: str, style: str) -> bool:
    """Write a caption sidecar next to ``media``: .txt, .json, or none. True when one was written."""
    if style == "txt":
        media.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    elif style == "json":
        meta = {"caption": text, "source_url": f"https://example.org/photos/{media.stem}", "license": "cc-by-4.0"}
        media.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return style in ("txt", "json")


# ----------------------------------------------------------------------------- folder sources

# fmt: off
_IMAGE_SIZES = [
    (640, 480), (480, 640), (512, 512), (320, 240), (256, 192), (400, 300), (300, 200), (160, 120), (128, 128),
    (600, 150), (224, 224), (360, 240), (32, 24), (48, 40), (20, 60), (96, 72),
]
# fmt: on
_IMAGE_EXTS = [".jpg", ".jpg", ".png", ".jpg", ".webp", ".jpg"]
_PATTERNS = ["noise", "shapes", "gradient"]
_SIDECAR_STYLES = ["txt", "txt", "json", "txt", "json", "txt", "none"]


def _images(ctx: _Ctx) -> Path:
    folder = ctx.root / "images"
    entry = ctx.source("images", "folder", "images")
    entry.update(small=[], extreme_aspect=[], no_sidecar=[], sidecars=0)
    made: list[Path] = []
    for i in range(22 * ctx.scale):
        w, h = _IMAGE_SIZES[i % len(_IMAGE_SIZES)]
        path = folder / f"photo_{i:04d}{_IMAGE_EXTS[i % len(_IMAGE_EXTS)]}"
        synth.make_image(path, w, h, seed=ctx.seed_for(), pattern=_PATTERNS[i % 3])
        style = _SIDECAR_STYLES[i % len(_SIDECAR_STYLES)]
        _note_sidecar(entry, path, _sidecar(ctx, path, ctx.caption(), style))
        if min(w, h) < SMALL_SIDE:
            entry["small"].append(path.name)
        if max(w / h, h / w) >= EXTREME_ASPECT:
            entry["extreme_aspect"].append(path.name)
        made.append(path)
    for j, (original, caption) in enumerate([(made[1], None), (made[4], ctx.caption())]):
        copy = synth.copy_file(original, folder / f"upload_{j:04d}{original.suffix}")
        src_caption = _read_caption(original)
        _note_sidecar(entry, copy, _sidecar(ctx, copy, caption or src_caption or ctx.caption(), "txt"))
        entry["duplicates"].append({"file": copy.name, "of": original.name, "same_caption": caption is None})
    broken = synth.make_corrupt(folder / "photo_broken.jpg", "truncated", source=made[0])
    _note_sidecar(entry, broken, _sidecar(ctx, broken, ctx.caption(), "txt"))
    garbage = synth.make_corrupt(folder / "scan_0001.png", "garbage", seed=ctx.seed_for())
    _note_sidecar(entry, garbage, False)
    entry["corrupt"] = [broken.name, garbage.name]
    entry["media_files"] = entry["rows"] = len(made) + 4
    return folder


def _note_sidecar(entry: dict[str, Any], media: Path, written: bool) -> None:
    if written:
        entry["sidecars"] += 1
    else:
        entry["no_sidecar"].append(media.name)


def _read_caption(media: Path) -> str | None:
    if media.with_suffix(".txt").exists():
        return media.with_suffix(".txt").read_text(encoding="utf-8").strip()
    if media.with_suffix(".json").exists():
        return json.loads(media.with_suffix(".json").read_text(encoding="utf-8"))["caption"]
    return None


_VIDEO_SPECS = [  # seconds, audio, moving, codec
    (1.0, True, True, None),
    (2.0, False, True, None),
    (1.5, True, True, None),
    (1.0, False, False, None),
    (1.0, True, True, "mpeg4"),
]


def _videos(ctx: _Ctx) -> Path:
    folder = ctx.root / "videos"
    entry = ctx.source("videos", "folder", "videos")
    entry.update(static=[], with_audio=[], sidecars=0, no_sidecar=[])
    made: list[Path] = []
    for i in range(len(_VIDEO_SPECS) * ctx.scale):
        seconds, audio, moving, codec = _VIDEO_SPECS[i % len(_VIDEO_SPECS)]
        path = folder / f"clip_{i:04d}.mp4"
        synth.make_video(path, seconds=seconds, seed=ctx.seed_for(), audio=audio, moving=moving, codec=codec)
        _note_sidecar(entry, path, _sidecar(ctx, path, ctx.caption(), "txt"))
        if not moving:
            entry["static"].append(path.name)
        if audio:
            entry["with_audio"].append(path.name)
        made.append(path)
    copy = synth.copy_file(made[0], folder / "clip_upload_0001.mp4")
    _note_sidecar(entry, copy, _sidecar(ctx, copy, _read_caption(made[0]) or "", "txt"))
    entry["duplicates"].append({"file": copy.name, "of": made[0].name, "same_caption": True})
    broken = synth.make_corrupt(folder / "clip_broken.mp4", "truncated", source=made[2])
    _note_sidecar(entry, broken, _sidecar(ctx, broken, ctx.caption(), "txt"))
    entry["corrupt"] = [broken.name]
    entry["media_files"] = entry["rows"] = len(made) + 2
    return folder


_AUDIO_SPECS = [  # seconds, sample rate, kind
    (1.0, 16000, "speechlike"),
    (2.0, 16000, "speechlike"),
    (3.0, 16000, "speechlike"),
    (1.5, 8000, "speechlike"),
    (1.0, 16000, "tone"),
    (2.0, 16000, "noise"),
]


def _audio(ctx: _Ctx) -> Path:
    folder = ctx.root / "audio"
    entry = ctx.source("audio", "folder", "audio")
    entry.update(low_sample_rate=[], sidecars=0, no_sidecar=[])
    made: list[Path] = []
    for i in range(len(_AUDIO_SPECS) * ctx.scale):
        seconds, rate, kind = _AUDIO_SPECS[i % len(_AUDIO_SPECS)]
        path = folder / f"utt_{i:04d}.wav"
        synth.make_audio(path, seconds=seconds, sample_rate=rate, seed=ctx.seed_for(), kind=kind)
        _note_sidecar(entry, path, _sidecar(ctx, path, ctx.pick(_SPEECH), "txt"))
        if rate < LOW_RATE:
            entry["low_sample_rate"].append(path.name)
        made.append(path)
    copy = synth.copy_file(made[1], folder / "utt_repeat_0001.wav")
    _note_sidecar(entry, copy, _sidecar(ctx, copy, _read_caption(made[1]) or "", "txt"))
    entry["duplicates"].append({"file": copy.name, "of": made[1].name, "same_caption": True})
    garbage = synth.make_corrupt(folder / "utt_broken.wav", "garbage", seed=ctx.seed_for())
    _note_sidecar(entry, garbage, _sidecar(ctx, garbage, ctx.pick(_SPEECH), "txt"))
    entry["corrupt"] = [garbage.name]
    entry["media_files"] = entry["rows"] = len(made) + 2
    return folder


def _docs(ctx: _Ctx) -> Path:
    folder = ctx.root / "docs"
    entry = ctx.source("docs", "folder", "docs")
    entry.update(images=0, missing_media=[])
    for i in range(4 * ctx.scale):
        title, lead = _TOPICS[i % len(_TOPICS)]
        n_img = 1 + i % 3
        srcs = [f"img/doc{i:02d}_{k}.jpg" for k in range(n_img)]
        for src in srcs:
            synth.make_image(folder / src, 320, 240, seed=ctx.seed_for(), pattern=_PATTERNS[i % 3])
        if i == 1:
            srcs.append(f"img/doc{i:02d}_missing.jpg")
            entry["missing_media"].append(f"docs/{srcs[-1]}")
        paragraphs = [ctx.paragraph(lead)] + [ctx.paragraph(ctx.pick(_FILLER)) for _ in range(len(srcs))]
        synth.make_html_doc(folder / f"page_{i:02d}.html", images=srcs, paragraphs=paragraphs, title=title)
        entry["images"] += n_img
    entry["rows"] = 4 * ctx.scale
    return folder


# ----------------------------------------------------------------------------- manifests


def _llava(ctx: _Ctx, manifests: Path) -> Path:
    entry = ctx.source("llava", "manifest", "manifests/llava.jsonl")
    rows: list[dict[str, Any] | str] = []
    for i in range(6 * ctx.scale):
        image = f"img/llava_{i:04d}.jpg"
        synth.make_image(manifests / image, *_IMAGE_SIZES[i % 8], seed=ctx.seed_for(), pattern=_PATTERNS[i % 3])
        subject, place = ctx.pick(_SUBJECTS), ctx.pick(_PLACES)
        caption = f"{subject} {ctx.pick(_ACTIONS)} {place}."
        q, a = _QUESTIONS[i % len(_QUESTIONS)]
        answer = a.format(caption=caption, subject=subject[0].lower() + subject[1:], place=place)
        turns = [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": answer}]
        rows.append({"id": f"llava-{i:04d}", "image": image, "conversations": turns})
    for i, (q, a) in enumerate(
        [
            ("What is the capital of Portugal?", "The capital of Portugal is Lisbon."),
            (
                "Give me a tip for learning to cook.",
                "Start with a few simple recipes and repeat them until they feel easy.",
            ),
        ]
    ):
        rows.append(
            {"id": f"llava-text-{i}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        )
    rows.insert(3, '{"id": "llava-broken", "image": "img/llava_0099.jpg", "conversations": [{"from": "human"')
    _write_jsonl(manifests / "llava.jsonl", rows)
    entry.update(rows=len(rows), malformed_lines=[4], text_only=2)
    return manifests / "llava.jsonl"


def _preference(ctx: _Ctx, manifests: Path) -> Path:
    entry = ctx.source("preference", "manifest", "manifests/preference.jsonl")
    rows: list[dict[str, Any] | str] = []
    for i in range(5 * ctx.scale):
        good, bad = ctx.caption(), f"{ctx.pick(_SUBJECTS)} {ctx.pick(_ACTIONS)}."
        row: dict[str, Any] = {"prompt": "Describe the image in one sentence.", "chosen": good, "rejected": bad}
        if i % 2 == 0:
            row["image"] = f"img/pref_{i:04d}.jpg"
            synth.make_image(manifests / row["image"], 256, 192, seed=ctx.seed_for())
        else:
            row = {
                "prompt": f"Summarise: {ctx.paragraph(ctx.pick(_TOPICS)[1])}",
                "chosen": ctx.pick(_FILLER),
                "rejected": "I don't know.",
            }
        rows.append(row)
    for i in range(2):
        pair = [f"img/gen_{i:04d}_{k}.png" for k in ("a", "b")]
        synth.make_image(manifests / pair[0], 256, 256, seed=ctx.seed_for(), pattern="shapes")
        synth.make_image(manifests / pair[1], 256, 256, seed=ctx.seed_for(), pattern="gradient")
        rows.append({"prompt": ctx.caption(), "chosen_image": pair[0], "rejected_image": pair[1]})
    _write_jsonl(manifests / "preference.jsonl", rows)
    entry.update(rows=len(rows), generation_pairs=2, with_image=sum(1 for r in rows if "image" in r))
    return manifests / "preference.jsonl"


_ACTIONS_WEB = [
    {"type": "click", "x": 120, "y": 48},
    {"type": "type", "text": "running shoes"},
    {"type": "scroll", "dy": 400},
    {"type": "click", "x": 300, "y": 210},
]


def _trajectories(ctx: _Ctx, manifests: Path) -> Path:
    entry = ctx.source("trajectories", "manifest", "manifests/trajectories.jsonl")
    goals = [
        "Find the opening hours of the city museum",
        "Add running shoes to the cart",
        "Subscribe to the newsletter",
    ]
    rows: list[dict[str, Any] | str] = []
    steps_total = 0
    for i in range(3 * ctx.scale):
        steps = []
        for s in range(2 + i % 2):
            shot = f"shots/traj{i:02d}_{s}.png"
            synth.make_image(manifests / shot, 320, 200, seed=ctx.seed_for(), pattern="shapes")
            steps.append(
                {
                    "observation": f"Page {s + 1} of the site is shown.",
                    "screenshot": shot,
                    "action": _ACTIONS_WEB[(i + s) % len(_ACTIONS_WEB)],
                }
            )
        steps_total += len(steps)
        rows.append({"goal": goals[i % len(goals)], "environment": "web", "steps": steps})
    _write_jsonl(manifests / "trajectories.jsonl", rows)
    entry.update(rows=len(rows), steps=steps_total)
    return manifests / "trajectories.jsonl"


def _obelics(ctx: _Ctx, manifests: Path) -> Path:
    entry = ctx.source("obelics", "manifest", "manifests/obelics.jsonl")
    rows: list[dict[str, Any] | str] = []
    n_images = 0
    for i in range(3 * ctx.scale):
        title, lead = _TOPICS[(i + 2) % len(_TOPICS)]
        texts: list[str | None] = [f"{title}. {ctx.paragraph(lead)}"]
        images: list[str | None] = [None]
        for k in range(1 + i % 2):
            src = f"obelics/doc{i:02d}_{k}.jpg"
            synth.make_image(manifests / src, 256, 192, seed=ctx.seed_for(), pattern=_PATTERNS[k % 3])
            texts += [None, ctx.paragraph(ctx.pick(_FILLER))]
            images += [src, None]
            n_images += 1
        rows.append({"url": f"https://example.org/articles/{i}", "texts": texts, "images": images})
    _write_jsonl(manifests / "obelics.jsonl", rows)
    entry.update(rows=len(rows), images=n_images)
    return manifests / "obelics.jsonl"


def _text(ctx: _Ctx, manifests: Path) -> Path:
    entry = ctx.source("text", "manifest", "manifests/text.jsonl")
    rows: list[dict[str, Any] | str] = [
        {"text": ctx.paragraph(_TOPICS[i % len(_TOPICS)][1])} for i in range(5 * ctx.scale)
    ]
    original = rows[1]["text"]  # type: ignore[index]
    rows.append({"text": "  " + original.upper().replace(" ", "   ") + "\n"})
    _write_jsonl(manifests / "text.jsonl", rows)
    entry.update(rows=len(rows))
    entry["duplicates"].append({"file": f"line {len(rows)}", "of": "line 2", "same_caption": False})
    return manifests / "text.jsonl"


# ----------------------------------------------------------------------------- webdataset shard


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _shards(ctx: _Ctx) -> Path:
    folder = ctx.root / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    entry = ctx.source("shards", "webdataset", "shards")
    with (
        tempfile.TemporaryDirectory() as scratch_dir,
        tarfile.open(folder / "demo-000000.tar", "w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        scratch = Path(scratch_dir)
        for i in range(6 * ctx.scale):
            key = f"sample{i:06d}"
            img = synth.make_image(scratch / f"{key}.jpg", *_IMAGE_SIZES[(i + 3) % 8], seed=ctx.seed_for())
            _tar_add(tar, f"{key}.jpg", img.read_bytes())
            caption = ctx.caption()
            if i % 2:
                meta = {"caption": caption, "width": _IMAGE_SIZES[(i + 3) % 8][0]}
                _tar_add(tar, f"{key}.json", json.dumps(meta).encode())
            else:
                _tar_add(tar, f"{key}.txt", caption.encode())
    entry.update(rows=6 * ctx.scale, tars=1)
    return folder


# ----------------------------------------------------------------------------- entry point


def _totals(planted: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Corpus-wide counts. ``quarantined``: rows a correct pipeline quarantines (corrupt media and
    malformed lines); the missing image sits in an interleaved page, which is kept."""
    totals = {
        "rows": sum(e["rows"] for e in planted.values()),
        "duplicates": sum(len(e["duplicates"]) for e in planted.values()),
        "corrupt": sum(len(e["corrupt"]) for e in planted.values()),
        "malformed_lines": sum(len(e.get("malformed_lines", [])) for e in planted.values()),
        "missing_media": sum(len(e.get("missing_media", [])) for e in planted.values()),
    }
    totals["quarantined"] = totals["corrupt"] + totals["malformed_lines"]
    return totals


def make_demo_corpus(root: Path, *, seed: int = 0, scale: int = 1) -> dict[str, Path]:
    """Write the demo corpus under ``root`` and return the source paths by name (see PLANTED.json)."""
    if scale < 1:
        raise ValueError("scale must be >= 1")
    start = time.perf_counter()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ctx = _Ctx(root=root, rng=np.random.default_rng(seed), scale=scale, seed=seed)
    manifests = root / "manifests"
    paths = {
        "images": _images(ctx),
        "videos": _videos(ctx),
        "audio": _audio(ctx),
        "docs": _docs(ctx),
        "llava": _llava(ctx, manifests),
        "preference": _preference(ctx, manifests),
        "trajectories": _trajectories(ctx, manifests),
        "obelics": _obelics(ctx, manifests),
        "text": _text(ctx, manifests),
        "shards": _shards(ctx),
    }
    planted = {"seed": seed, "scale": scale, "sources": ctx.planted, "totals": _totals(ctx.planted)}
    (root / PLANTED_NAME).write_text(json.dumps(planted, indent=2) + "\n", encoding="utf-8")
    log.info("demo corpus: %d rows in %s (%.1f s)", planted["totals"]["rows"], root, time.perf_counter() - start)
    return paths
