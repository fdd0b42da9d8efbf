"""Moving a dataset onto the lent GPU machine, and trained weights back, within the
device tool's limits: what travels to the machine is at most 64 MiB a call (the working
tree plus carried paths), and what comes back is at most 8 files of 16 MiB.

Images travel losslessly coded, in parts that fit one call each. Each channel of each
pixel is predicted from its already-decoded neighbours by the median edge detector of
LOCO-I / JPEG-LS (a = left, b = above, c = above-left; 0 outside the image):

    pred = min(a, b) if c >= max(a, b);  max(a, b) if c <= min(a, b);  a + b - c otherwise,

the residuals r = x - pred of red and blue are taken relative to green's (r_R - r_G,
r_B - r_G), and the residual bytes (mod 256) are compressed by xz. On CIFAR-10 that is 0.56
of the 184 MB of raw pixels (the zlib `.npz` is 0.92), so the dataset fits two calls. A
part holds a run of consecutive images of the train-then-test sequence; its manifest
records the sha256 of the part file and of the whole dataset's arrays, which the machine
checks after decoding.

Files coming back (weights, checkpoints) are cut into pieces of at most 15 MiB, listed
with their sha256 and the whole file's in a JSON manifest; `join_file` checks both.
"""

import hashlib
import json
import lzma
import os

import numpy as np

from keras_fsnn.zoo import sha256 as sha256_file

FORMAT = "loco-i-med-rgb-xz/1"
SPLITS = ("train", "test")
PIECE_BYTES = 15 * 2**20


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def _neighbours(planes):
    """(a, b, c) = left, above, above-left of every pixel of (N, C, H, W) int16 planes."""
    a, b, c = (np.zeros_like(planes) for _ in range(3))
    a[..., :, 1:] = planes[..., :, :-1]
    b[..., 1:, :] = planes[..., :-1, :]
    c[..., 1:, 1:] = planes[..., :-1, :-1]
    return a, b, c


def _median_edge(a, b, c):
    low, high = np.minimum(a, b), np.maximum(a, b)
    return np.where(c >= high, low, np.where(c <= low, high, a + b - c))


def encode_images(images):
    """Residual bytes of uint8 images (N, H, W, 3): (N, 3, H, W) uint8 in C order."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"encode_images needs uint8 (N, H, W, 3) images; received {images.dtype} {images.shape}.")
    planes = images.transpose(0, 3, 1, 2).astype(np.int16)
    residual = planes - _median_edge(*_neighbours(planes))
    residual[:, 0] -= residual[:, 1]
    residual[:, 2] -= residual[:, 1]
    return (residual % 256).astype(np.uint8).tobytes()


def decode_images(data, count, height, width):
    """The inverse of `encode_images`: uint8 images (count, height, width, 3)."""
    residual = np.frombuffer(data, np.uint8).reshape(count, 3, height, width).astype(np.int16)
    residual[:, 0] += residual[:, 1]
    residual[:, 2] += residual[:, 1]
    residual = residual.transpose(2, 3, 0, 1)  # (H, W, N, C): a pixel's values lie together
    # decoded pixels, with one row and one column of zeros before the image; the pixels of
    # one anti-diagonal y + x = d depend only on the two before it: decoded together
    pixels = np.zeros((height + 1, width + 1, count, 3), np.int16)
    for d in range(height + width - 1):
        y = np.arange(max(0, d - width + 1), min(d, height - 1) + 1)
        x = d - y
        a, b, c = pixels[y + 1, x], pixels[y, x + 1], pixels[y, x]
        pixels[y + 1, x + 1] = (_median_edge(a, b, c) + residual[y, x]) % 256
    return np.ascontiguousarray(pixels[1:, 1:].transpose(2, 0, 1, 3)).astype(np.uint8)


def arrays_digest(arrays):
    """{split: {"images", "labels"}} sha256 of the dataset's uint8 arrays' bytes."""
    return {split: {"images": sha256_bytes(np.ascontiguousarray(x).tobytes()),
                    "labels": sha256_bytes(np.ascontiguousarray(y).astype(np.uint8).tobytes())}
            for split, (x, y) in arrays.items()}


def pack_dataset(name, arrays, folder, parts, preset=6):
    """Write `arrays` ({"train": (x, y), "test": (x, y)}, uint8 images and labels < 256)
    as `parts` folders `folder/{name}-{k}/` (k = 1..parts), each with `part.xz` and
    `part.json`; returns the part folders. The train-then-test sequence of images is cut
    into `parts` runs of (nearly) equal length."""
    sequence = [(split, index) for split in SPLITS for index in range(len(arrays[split][1]))]
    bounds = np.linspace(0, len(sequence), parts + 1).round().astype(int)
    digest = arrays_digest(arrays)
    height, width = arrays["train"][0].shape[1:3]
    folders = []
    for k in range(parts):
        segments = []  # [split, start, stop] runs of this part
        for split in SPLITS:
            inside = [i for s, i in sequence[bounds[k]:bounds[k + 1]] if s == split]
            if inside:
                segments.append([split, inside[0], inside[-1] + 1])
        labels = np.concatenate([arrays[s][1][a:b] for s, a, b in segments]).astype(np.uint8)
        images = np.concatenate([arrays[s][0][a:b] for s, a, b in segments])
        payload = lzma.compress(labels.tobytes() + encode_images(images), preset=preset)
        part = os.path.join(folder, f"{name}-{k + 1}")
        os.makedirs(part, exist_ok=True)
        with open(os.path.join(part, "part.xz"), "wb") as f:
            f.write(payload)
        manifest = {"format": FORMAT, "dataset": name, "part": k + 1, "parts": parts, "segments": segments,
                    "image_shape": [int(height), int(width), 3], "bytes": len(payload),
                    "raw_bytes": int(images.nbytes + labels.nbytes), "sha256": sha256_bytes(payload),
                    "sizes": {s: int(len(arrays[s][1])) for s in SPLITS}, "arrays_sha256": digest}
        with open(os.path.join(part, "part.json"), "w") as f:
            json.dump(manifest, f, indent=1)
        folders.append(part)
    return folders


def decode_part(part_folder):
    """(manifest, images, labels) of one part folder, after checking its sha256."""
    with open(os.path.join(part_folder, "part.json")) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{part_folder}/part.json: format {manifest.get('format')!r}, expected {FORMAT!r}.")
    with open(os.path.join(part_folder, "part.xz"), "rb") as f:
        payload = f.read()
    if sha256_bytes(payload) != manifest["sha256"]:
        raise ValueError(f"{part_folder}/part.xz is damaged: sha256 {sha256_bytes(payload)}, manifest "
                         f"{manifest['sha256']}.")
    data = lzma.decompress(payload)
    count = sum(b - a for _, a, b in manifest["segments"])
    height, width, _ = manifest["image_shape"]
    labels = np.frombuffer(data[:count], np.uint8).copy()
    return manifest, decode_images(data[count:], count, height, width), labels


def assemble(decoded):
    """The dataset's arrays {"train": (x, y), "test": (x, y)} from all its decoded parts
    [(manifest, images, labels)], checked against the manifests' sha256."""
    first = decoded[0][0]
    missing = sorted(set(range(1, first["parts"] + 1)) - {m["part"] for m, _, _ in decoded})
    if missing:
        raise FileNotFoundError(f"{first['dataset']}: parts {missing} of {first['parts']} are not here.")
    height, width, _ = first["image_shape"]
    arrays = {s: (np.zeros((n, height, width, 3), np.uint8), np.zeros(n, np.uint8)) for s, n in first["sizes"].items()}
    for manifest, images, labels in decoded:
        position = 0
        for split, start, stop in manifest["segments"]:
            arrays[split][0][start:stop] = images[position:position + stop - start]
            arrays[split][1][start:stop] = labels[position:position + stop - start]
            position += stop - start
    if arrays_digest(arrays) != first["arrays_sha256"]:
        raise ValueError(f"{first['dataset']}: the decoded arrays do not match the sha256 the parts were packed with.")
    return arrays


def split_file(path, folder, stem, piece_bytes=PIECE_BYTES):
    """Cut `path` into `folder/{stem}.partNN` pieces of at most `piece_bytes`; return the
    manifest {"file", "bytes", "sha256", "pieces": [{"name", "bytes", "sha256"}]}."""
    pieces = []
    with open(path, "rb") as f:
        for index, chunk in enumerate(iter(lambda: f.read(piece_bytes), b"")):
            name = f"{stem}.part{index:02d}"
            with open(os.path.join(folder, name + ".tmp"), "wb") as out:
                out.write(chunk)
            os.replace(os.path.join(folder, name + ".tmp"), os.path.join(folder, name))
            pieces.append({"name": name, "bytes": len(chunk), "sha256": sha256_bytes(chunk)})
    return {"file": os.path.basename(path), "bytes": os.path.getsize(path), "sha256": sha256_file(path),
            "pieces": pieces}


def join_file(manifest, folder, path):
    """Join the pieces a `split_file` manifest lists (in `folder`) into `path`, checking
    every piece's sha256 and the whole file's."""
    with open(path + ".tmp", "wb") as out:
        for piece in manifest["pieces"]:
            with open(os.path.join(folder, piece["name"]), "rb") as f:
                chunk = f.read()
            if sha256_bytes(chunk) != piece["sha256"]:
                raise ValueError(f"{folder}/{piece['name']} is damaged or from another run (sha256 mismatch).")
            out.write(chunk)
    if sha256_file(path + ".tmp") != manifest["sha256"]:
        raise ValueError(f"{manifest['file']} joined from {folder} does not match its sha256.")
    os.replace(path + ".tmp", path)
    return path
