"""Realistic inputs for the zoo models, made without network access.

Every source is real and named:
* photos: the colour photographs shipped in scikit-image (``skimage.data``) and scikit-learn
  (``load_sample_images``); calibration and held-out samples come from DIFFERENT photos (seeded crops);
* documents: the scanned page and the photo of text shipped in scikit-image, and pages of real English prose
  (the licence texts in /usr/share/common-licenses) rendered with Debian's DejaVu fonts;
* text lines and captchas: words of that prose rendered with the DejaVu fonts;
* speech: sentences of that prose spoken by Debian's espeak-ng (several voices), resampled to 16 kHz;
* wake words: a wake-word model's own phrase ("hey jarvis") spoken by espeak-ng English voices, calibration
  and held-out voices disjoint, so a detector is judged on inputs that contain what it detects;
* Khmer text: the day and month names of glibc's km_KH locale; Arabic text: the names in the
  arabic-name-romanizer wheel's own names database; bytes: the first and last kilobyte of real system files.
"""
from __future__ import annotations

import glob
import json
import os
import re
import sqlite3
import subprocess
import zipfile
from typing import Callable, Dict, List

import numpy as np

FONTS = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVu*.ttf"))
PROSE_FILES = ["GPL-3", "Apache-2.0", "LGPL-3", "MPL-2.0", "GFDL-1.3", "Artistic"]
CALIB_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "motorcycle_l", "china"]
EVAL_PHOTOS = ["hubble_deep_field", "retina", "motorcycle_r", "flower", "cat"]
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _seed(split: str, salt: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{split}/{salt}".encode()).digest()[:4], "little")


# ---------------------------------------------------------------- sources


def photos(split: str) -> List[np.ndarray]:
    import skimage.data as d
    from sklearn.datasets import load_sample_images

    sk = load_sample_images().images
    left, right, _ = d.stereo_motorcycle()
    table = {"china": sk[0], "flower": sk[1], "motorcycle_l": left, "motorcycle_r": right}
    names = CALIB_PHOTOS if split == "calib" else EVAL_PHOTOS
    return [table[n] if n in table else getattr(d, n)() for n in names]


def prose(split: str) -> List[str]:
    """Sentences of real English prose; calibration and held-out read different licence texts."""
    files = PROSE_FILES[:3] if split == "calib" else PROSE_FILES[3:]
    text = " ".join(open(f"/usr/share/common-licenses/{f}", encoding="utf-8", errors="ignore").read()
                    for f in files if os.path.exists(f"/usr/share/common-licenses/{f}"))
    words = re.findall(r"[A-Za-z0-9][A-Za-z0-9,.;:'()-]*", text)
    return [" ".join(words[i:i + 12]) for i in range(0, len(words) - 12, 12)]


def _font(rng, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(FONTS[int(rng.integers(len(FONTS)))], size)


def text_line_image(text: str, rng, height: int = 48) -> np.ndarray:
    from PIL import Image, ImageDraw

    font = _font(rng, int(rng.integers(26, 40)))
    box = font.getbbox(text)
    w, h = box[2] - box[0] + 16, box[3] - box[1] + 12
    bg = tuple(int(v) for v in rng.integers(190, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    img = Image.new("RGB", (w, h), bg)
    ImageDraw.Draw(img).text((8 - box[0], 6 - box[1]), text, font=font, fill=ink)
    arr = np.asarray(img).astype(np.float32)
    arr += rng.normal(0, 4, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def page_image(split: str, i: int, rng) -> np.ndarray:
    """A document image: a real scan / photo of text (skimage) or a page of real prose in a real font."""
    import skimage.data as d
    from PIL import Image, ImageDraw

    if i % 4 == 0:  # the real scanned page (calibration) / the real photo of text (held-out)
        src = d.page() if split == "calib" else d.text()
        return np.repeat(src[:, :, None], 3, axis=2)
    lines = prose(split)
    start = int(rng.integers(len(lines) - 20))
    width, height = 640, 640
    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(215, 256, 3)))
    draw = ImageDraw.Draw(img)
    size = int(rng.integers(14, 24))
    font, y = _font(rng, size), int(rng.integers(10, 40))
    for line in lines[start:start + 40]:
        draw.text((20, y), line[:70], font=font, fill=tuple(int(v) for v in rng.integers(0, 70, 3)))
        y += int(size * 1.5)
        if y > height - size:
            break
    return np.asarray(img)


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def crop(img: np.ndarray, rng, min_frac: float = 0.5) -> np.ndarray:
    h, w = img.shape[:2]
    f = rng.uniform(min_frac, 1.0)
    ch, cw = max(8, int(h * f)), max(8, int(w * f))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return img[y:y + ch, x:x + cw]


def pad_line(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """PaddleOCR's recognition preprocessing: keep the aspect, height h, pad the right up to w."""
    scale = h / img.shape[0]
    new_w = min(w, max(1, int(round(img.shape[1] * scale))))
    out = np.full((h, w, 3), img[0, 0], np.uint8)
    out[:, :new_w] = resize(img, h, new_w)
    return out


def normalise(img: np.ndarray, spec: dict) -> np.ndarray:
    """HWC uint8 RGB -> CHW float32 as the model's package does it (``norm`` of the manifest)."""
    x = img.astype(np.float32)
    if spec.get("gray"):
        x = x.mean(axis=2, keepdims=True)
    norm = spec.get("norm", "unit")
    if norm == "imagenet":
        x = (x / 255.0 - MEAN) / STD
    elif norm == "half":
        x = (x / 255.0 - 0.5) / 0.5
    elif norm == "unit":
        x = x / 255.0
    return np.ascontiguousarray(x.transpose(2, 0, 1), np.float32)


# ---------------------------------------------------------------- audio


def speech(split: str, cache: str, count: int = 6) -> List[np.ndarray]:
    """Sentences of prose spoken by espeak-ng with several voices, float32 in [-1, 1] at 16 kHz."""
    voices = ["en-us", "en", "en-gb-x-rp", "de", "fr", "es"]
    folder = os.path.join(cache, "speech", split)
    os.makedirs(folder, exist_ok=True)
    lines = prose(split)
    out = []
    for i in range(count):
        out.append(_espeak(" ".join(lines[7 * i:7 * i + 3]), voices[i % len(voices)], 140 + 10 * i,
                           os.path.join(folder, f"s{i}.wav")))
    return out


def _espeak(text: str, voice: str, speed: int, path: str) -> np.ndarray:
    """``text`` spoken by espeak-ng, cached at ``path``, float32 in [-1, 1] resampled to 16 kHz."""
    import wave

    if not os.path.exists(path):
        tmp = path + ".tmp"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", tmp, text],
                       check=True, capture_output=True, timeout=120)
        os.replace(tmp, path)
    with wave.open(path) as wav:
        rate, raw = wav.getframerate(), wav.readframes(wav.getnframes())
    sig = np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
    t = np.arange(0, len(sig) / rate, 1 / 16000.0)
    return np.interp(t, np.arange(len(sig)) / rate, sig).astype(np.float32)


PHRASE_VOICES = {"calib": ["en-us", "en-gb-x-rp", "en-us+f3", "en-gb-scotland+m3", "en-029+f2", "en+m7"],
                 "eval": ["en", "en-gb-x-gbclan+f4", "en-us+m3", "en-gb-x-rp+f2", "en-gb-x-gbcwmd", "en-us+f5"]}


def spoken_phrase(phrase: str, split: str, cache: str, n: int, seconds: float) -> List[np.ndarray]:
    """``n`` clips of ``seconds`` in which ``phrase`` ends 50-300 ms before the end, as a streaming wake-word
    detector sees it: the split's own voices at 120-190 words a minute, gain 0.3-1, faint noise."""
    rng = np.random.default_rng(_seed(split, f"phrase/{phrase}"))
    folder = os.path.join(cache, "speech", split)
    os.makedirs(folder, exist_ok=True)
    total, out = int(16000 * seconds), []
    for i in range(n):
        voice, speed = PHRASE_VOICES[split][i % 6], int(rng.integers(120, 191))
        slug = re.sub(r"[^a-z0-9]+", "-", f"{phrase}-{voice}-{speed}".lower())
        sig = _espeak(phrase, voice, speed, os.path.join(folder, f"phrase-{slug}.wav"))
        end = total - int(16000 * rng.uniform(0.05, 0.3))
        sig = sig[-end:]
        clip = rng.normal(0, 0.002, total).astype(np.float32)
        clip[end - len(sig):end] += sig * rng.uniform(0.3, 1.0)
        out.append(clip)
    return out


def _audio_samples(split: str, cache: str, n: int, length: int) -> List[np.ndarray]:
    rng = np.random.default_rng(_seed(split, f"audio{length}"))
    clips = speech(split, cache)
    out = []
    for i in range(n):
        sig = clips[i % len(clips)]
        start = int(rng.integers(0, max(1, len(sig) - length)))
        chunk = sig[start:start + length]
        chunk = np.pad(chunk, (0, length - len(chunk)))
        out.append(chunk * rng.uniform(0.3, 1.0) + rng.normal(0, 0.002, length).astype(np.float32))
    return out


def _run(model: str, feeds: Dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def mel_windows(split: str, ctx: dict, n: int, frames: int) -> List[np.ndarray]:
    """openWakeWord's features: melspectrogram.onnx over speech, scaled as the package does (x/10 + 2)."""
    mel_model = ctx["model_path"]("oww_melspectrogram")
    clips = speech(split, ctx["cache"])
    rng = np.random.default_rng(_seed(split, f"mel{frames}"))
    out = []
    for i in range(n):
        sig = clips[i % len(clips)] * 32767.0
        mel = _run(mel_model, {"input": sig[None, :].astype(np.float32)}).squeeze() / 10.0 + 2.0
        start = int(rng.integers(0, max(1, mel.shape[0] - frames)))
        win = mel[start:start + frames]
        out.append(np.pad(win, ((0, frames - len(win)), (0, 0))).astype(np.float32))
    return out


def phrase_mel(phrase: str, split: str, ctx: dict, n: int, frames: int) -> List[np.ndarray]:
    """The last ``frames`` melspectrogram frames of clips that end in ``phrase`` (see spoken_phrase)."""
    mel_model = ctx["model_path"]("oww_melspectrogram")
    out = []
    for clip in spoken_phrase(phrase, split, ctx["cache"], n, seconds=frames / 100.0 + 0.3):
        mel = _run(mel_model, {"input": clip[None, :] * 32767.0}).squeeze() / 10.0 + 2.0
        out.append(mel[-frames:].astype(np.float32))
    return out


def embeddings(split: str, ctx: dict, n: int, phrase: str = "") -> List[np.ndarray]:
    """16 consecutive openWakeWord speech embeddings (76 mel frames each, stride 8) of real speech; with a
    ``phrase``, every other sample ends in it (a wake-word detector judged only on prose sees outputs near 0)."""
    emb_model = ctx["model_path"]("oww_embedding")
    frames = 76 + 15 * 8
    mels = mel_windows(split, ctx, n, frames)
    if phrase:
        spoken = phrase_mel(phrase, split, ctx, n // 2, frames)
        mels = [spoken[i // 2] if i % 2 and i // 2 < len(spoken) else m for i, m in enumerate(mels)]
    out = []
    for mel in mels:
        wins = np.stack([mel[8 * k:8 * k + 76] for k in range(16)])[:, :, :, None]
        out.append(_run(emb_model, {"input_1": wins}).reshape(16, 96).astype(np.float32))
    return out


# ---------------------------------------------------------------- text and bytes


def khmer_words() -> List[str]:
    text = open("/usr/share/i18n/locales/km_KH", encoding="utf-8", errors="ignore").read()
    words = []
    for m in re.finditer(r'"((?:<U[0-9A-F]{4}>)+)"', text):
        word = "".join(chr(int(c, 16)) for c in re.findall(r"<U([0-9A-F]{4})>", m.group(1)))
        if any(0x1780 <= ord(ch) <= 0x17FF for ch in word):
            words.append(word)
    return words


def wheel_member(ctx: dict, model: str, member: str) -> bytes:
    with zipfile.ZipFile(ctx["wheel_path"](model)) as zf:
        return zf.read(member)


def khmer_ids(split: str, ctx: dict, n: int, length: int) -> List[np.ndarray]:
    char2id = json.loads(wheel_member(ctx, "khmer_segmenter", "khmersm/config.json"))["char2id"]
    words = khmer_words()
    rng = np.random.default_rng(_seed(split, "khmer"))
    out = []
    for _ in range(n):
        text = ""
        while len(text) < length:
            text += words[int(rng.integers(len(words)))]
        out.append(np.array([char2id.get(ch, 1) for ch in text[:length]], np.int64))
    return out


def arabic_ids(split: str, ctx: dict, n: int, length: int) -> List[np.ndarray]:
    import tempfile

    vocab = json.loads(wheel_member(ctx, "arabic_encoder", "arabic_name_romanizer/resources/vocab.json"))["tokens"]
    index = {t: i for i, t in enumerate(vocab)}
    with tempfile.NamedTemporaryFile(suffix=".sqlite3") as tmp:
        tmp.write(wheel_member(ctx, "arabic_encoder", "arabic_name_romanizer/resources/names.sqlite3"))
        tmp.flush()
        rows = sqlite3.connect(tmp.name).execute(
            "SELECT arabic_key FROM units ORDER BY count DESC LIMIT 400").fetchall()
    names = [r[0] for r in rows][0::2] if split == "calib" else [r[0] for r in rows][1::2]
    out = []
    for i in range(n):
        ids = [index["<UNK_COUNTRY>"], index.get("<ROLE_UNKNOWN>", 3)]
        ids += [index.get(ch, 3) for ch in names[i % len(names)]] + [index["<EOS>"]]
        ids = (ids + [0] * length)[:length]
        out.append(np.array(ids, np.int64))
    return out


def file_bytes(split: str, n: int, size: int) -> List[np.ndarray]:
    """magika v3 features: the first and last size/2 bytes of a real file (whitespace stripped), padded with 256."""
    pattern = "/usr/share/doc/*/copyright" if split == "calib" else "/usr/lib/python3*/*.py"
    files = sorted(glob.glob(pattern))
    files += sorted(f for f in glob.glob("/usr/bin/*") if os.path.isfile(f))[0 if split == "calib" else 1::2]
    rng = np.random.default_rng(_seed(split, "bytes"))
    picks = [files[int(k)] for k in rng.choice(len(files), n, replace=False)]
    half = size // 2
    out = []
    for path in picks:
        with open(path, "rb") as f:
            data = f.read().strip()
        beg, end = list(data[:half]), list(data[-half:])
        beg += [256] * (half - len(beg))
        end = [256] * (half - len(end)) + end
        out.append(np.array(beg + end, np.int32))
    return out


# ---------------------------------------------------------------- dispatch


def image_samples(recipe: str, spec: dict, split: str, n: int) -> List[np.ndarray]:
    _, _, h, w = spec["shape"]
    # the seed names one sample's shape, never the batch: a fixed-batch-N export of a model gets the same
    # images as the free-batch one (the batch-1 spelling keeps every cached model's data as it was)
    rng = np.random.default_rng(_seed(split, recipe + str([1] + list(spec["shape"][1:]))))
    out = []
    if recipe == "photo":
        pics = photos(split)
        for i in range(n):
            out.append(resize(crop(pics[i % len(pics)], rng), h, w))
    elif recipe in ("document", "document_rotated"):
        for i in range(n):
            img = resize(crop(page_image(split, i, rng), rng, 0.6), h, w)
            out.append(np.ascontiguousarray(np.rot90(img, i % 4)) if recipe == "document_rotated" else img)
            if recipe == "document_rotated" and img.shape[0] != img.shape[1]:
                out[-1] = resize(out[-1], h, w)
    elif recipe == "text_line":
        lines = prose(split)
        for i in range(n):
            words = lines[int(rng.integers(len(lines)))].split()
            k = int(rng.integers(1, 6))
            img = pad_line(text_line_image(" ".join(words[:k]), rng), h, w)
            out.append(np.ascontiguousarray(np.rot90(img, 2)) if spec.get("flip_half") and i % 2 else img)
    elif recipe == "captcha":
        chars = "abcdefghijklmnopqrstuvwxyz0123456789"
        for _ in range(n):
            text = "".join(chars[int(k)] for k in rng.integers(0, len(chars), int(rng.integers(4, 7))))
            out.append(resize(text_line_image(text, rng), h, w))
    else:
        raise KeyError(recipe)
    return [normalise(img, spec) for img in out]


RecipeFn = Callable[[dict, str, int, dict], List[np.ndarray]]


def samples(spec: dict, split: str, n: int, ctx: dict) -> List[np.ndarray]:
    """``n`` samples for one input: arrays of shape ``shape[1:]`` (the batch dim is added on save), or ``shape``
    for a ``whole`` input."""
    recipe, shape = spec["recipe"], spec["shape"]
    dtype = np.dtype({"float32": np.float32, "int64": np.int64, "int32": np.int32, "bool": np.bool_}[
        spec.get("dtype", "float32")])
    if recipe in ("photo", "document", "document_rotated", "text_line", "captcha"):
        arrays = image_samples(recipe, spec, split, n)
    elif recipe == "zeros":
        arrays = [np.zeros(shape if spec.get("whole") else shape[1:], dtype) for _ in range(n)]
    elif recipe == "const":
        arrays = [np.array(spec["value"], dtype) for _ in range(n)]
    elif recipe == "speech_chunk":
        arrays = _audio_samples(split, ctx["cache"], n, shape[-1])
    elif recipe == "speech_windows":
        arrays = [a.reshape(shape[1:]) for a in _audio_samples(split, ctx["cache"], n, int(np.prod(shape[1:])))]
    elif recipe == "speech_1s":
        arrays = [a * 32767.0 for a in _audio_samples(split, ctx["cache"], n, shape[-1])]
    elif recipe == "mel_frames":
        arrays = [m[:, :, None] for m in mel_windows(split, ctx, n, shape[1])]
    elif recipe == "embeddings":
        arrays = embeddings(split, ctx, n, spec.get("phrase", ""))
    elif recipe == "khmer_ids":
        arrays = khmer_ids(split, ctx, n, shape[-1])
    elif recipe == "khmer_mask":
        arrays = [np.ones(shape[1:], bool) for _ in range(n)]
    elif recipe == "arabic_ids":
        arrays = arabic_ids(split, ctx, n, shape[-1])
    elif recipe == "arabic_mask":
        arrays = [ids == 0 for ids in arabic_ids(split, ctx, n, shape[-1])]
    elif recipe == "file_bytes":
        arrays = file_bytes(split, n, shape[-1])
    else:
        raise KeyError(f"unknown recipe {recipe!r}")
    return [np.asarray(a).astype(dtype) for a in arrays]
