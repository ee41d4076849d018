"""Knowledge distillation inputs: the teacher's soft labels for both heads, computed once and cached.

The teacher is any MarketMood artifact (e.g. all-mpnet-base-v2 fine-tuned with ``marketmood train
--base-encoder``); it scores every text of the transfer set (labeled train rows plus unlabeled in-domain
text) with its own preprocessing through the engine. The cache file is named by a fingerprint of the
teacher (version + weights hash) and of the exact texts, so a changed teacher or transfer set is never
served stale logits, and an unchanged one is never scored twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from tqdm.auto import tqdm

from models.artifact import ONNX_INT8_FILE, read_info, torch_weights_file
from models.engine import load_engine
from models.labels import SENTIMENT_LABELS, TOPIC_LABELS
from training.reproducibility import file_sha256

log = structlog.get_logger(__name__)
CACHE_VERSION = 1


@dataclass
class SoftLabels:
    """Teacher logits per text, columns in ``models.labels`` order (the student's head order)."""

    fingerprint: str
    teacher: str
    texts: list[str]
    sentiment: np.ndarray
    topic: np.ndarray

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sentiment_logits, topic_logits, has_teacher) aligned with ``texts`` (zeros where absent)."""
        row = {t: i for i, t in enumerate(self.texts)}
        hit = np.array([t in row for t in texts], dtype=bool)
        idx = np.array([row.get(t, 0) for t in texts], dtype=np.int64)
        s = np.where(hit[:, None], self.sentiment[idx], 0).astype(np.float32) if len(texts) else np.zeros((0, 3), np.float32)
        t = np.where(hit[:, None], self.topic[idx], 0).astype(np.float32) if len(texts) else np.zeros((0, len(TOPIC_LABELS)), np.float32)
        return s, t, hit

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, sentiment=self.sentiment, topic=self.topic,
                            meta=np.array(json.dumps({"fingerprint": self.fingerprint, "teacher": self.teacher,
                                                      "version": CACHE_VERSION})),
                            texts=np.array(self.texts, dtype=object))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> SoftLabels:
        with np.load(path, allow_pickle=True) as data:
            meta = json.loads(str(data["meta"]))
            return cls(meta["fingerprint"], meta["teacher"], [str(t) for t in data["texts"]],
                       data["sentiment"].astype(np.float32), data["topic"].astype(np.float32))


def teacher_identity(teacher_dir: Path) -> str:
    """Version plus a hash of the weights the engine would load (ONNX int8 preferred, as served)."""
    info = read_info(teacher_dir)
    weights = teacher_dir / ONNX_INT8_FILE if (teacher_dir / ONNX_INT8_FILE).is_file() else torch_weights_file(teacher_dir)
    return f"{info.version}@{file_sha256(weights) if weights else 'no-weights'}"


def soft_label_fingerprint(teacher: str, texts: Sequence[str], max_length: int | None) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}\x1f{teacher}\x1f{max_length}\x1e".encode())
    for text in sorted(set(texts)):
        digest.update(text.encode() + b"\x1e")
    return "sha256:" + digest.hexdigest()


def _reorder(logits: np.ndarray, have: Sequence[str], want: Sequence[str]) -> np.ndarray:
    return logits[:, [list(have).index(name) for name in want]]


def teacher_soft_labels(
    teacher_dir: Path | str,
    texts: Sequence[str],
    cache_dir: Path | str,
    *,
    threads: int | None = None,
    max_length: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[SoftLabels, Path, bool]:
    """Soft labels for ``texts`` from the teacher: (labels, cache path, reused). Scored once per fingerprint."""
    teacher_dir = Path(teacher_dir)
    teacher = teacher_identity(teacher_dir)
    unique = sorted(set(texts))
    fingerprint = soft_label_fingerprint(teacher, unique, max_length)
    path = Path(cache_dir) / f"soft-labels-{fingerprint.split(':')[1][:20]}.npz"
    if path.is_file():
        cached = SoftLabels.load(path)
        if cached.fingerprint == fingerprint:
            log.info("distill.cache_hit", path=str(path), texts=len(unique))
            return cached, path, True
    engine = load_engine(teacher_dir, threads=threads, max_length=max_length)
    info = read_info(teacher_dir)
    sentiment, topic = [], []
    for start in tqdm(range(0, len(unique), batch_size * 8), desc="teacher soft labels", disable=not progress, unit="chunk"):
        s, t = engine.predict_logits(unique[start : start + batch_size * 8])
        sentiment.append(s)
        topic.append(t)
    s_all = np.concatenate(sentiment) if sentiment else np.zeros((0, len(SENTIMENT_LABELS)), np.float32)
    t_all = np.concatenate(topic) if topic else np.zeros((0, len(TOPIC_LABELS)), np.float32)
    labels = SoftLabels(fingerprint, teacher, unique,
                        _reorder(s_all, info.labels["sentiment"], SENTIMENT_LABELS).astype(np.float32),
                        _reorder(t_all, info.labels["topic"], TOPIC_LABELS).astype(np.float32))
    labels.save(path)
    log.info("distill.scored", path=str(path), texts=len(unique), teacher=teacher)
    return labels, path, False
