"""Knowledge distillation inputs: the teacher's soft labels for both heads, computed once and cached.

The teacher is any MarketMood artifact (e.g. all-mpnet-base-v2 fine-tuned with ``marketmood train
--base-encoder``); it scores every text of the transfer set (labeled train rows plus unlabeled in-domain
text) with its own preprocessing through the engine. The cache file is named by a fingerprint of the
teacher (version + hash of the weights file its runtime loads + that runtime: backend, device, precision) and of
the exact texts, so a changed teacher, runtime or transfer set is never served stale logits, and an unchanged
one is never scored twice. Nothing in a soft-label file is read with pickle (a cache file's texts are JSON).

A cache file names its texts, and the texts are the datasets' own, so it cannot be shared or committed. A
*shareable* copy (``SoftLabels.shareable``, ``marketmood teacher share-labels``) names each text by a 16-byte
SHA-256 prefix instead and keeps only the heads its teacher was trained for: a student can then be distilled on
another machine, or in a later session, without the 110M teacher or its two ~20-minute scoring passes.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from tqdm.auto import tqdm

from models.artifact import ONNX_INT8_FILE, read_info, torch_weights_file
from models.engine import choose_runtime, load_engine
from models.labels import SENTIMENT_LABELS, TOPIC_LABELS
from training.reproducibility import file_sha256

log = structlog.get_logger(__name__)
CACHE_VERSION = 1
KEY_BYTES = 16
HEADS = ("sentiment", "topic")
TEXTS_ARRAY = "texts_json"  # a cache file's texts: one JSON list in a 0-d unicode array (no pickle)


class SoftLabelError(ValueError):
    """A soft-label file that cannot give what the training run asks of it (a head it does not carry)."""


class LegacyCacheError(SoftLabelError):
    """A cache file whose texts are a pickled object array (the format before JSON texts): never unpickled."""


def _read_texts(data: np.lib.npyio.NpzFile, path: Path) -> list[str]:
    """A cache file's texts, without pickle: the JSON string, or a plain unicode array; a pickled array is refused."""
    if TEXTS_ARRAY in data.files:
        texts = json.loads(str(data[TEXTS_ARRAY]))
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise SoftLabelError(f"{path}: {TEXTS_ARRAY} is not a list of texts")
        return texts
    if "texts" not in data.files:
        raise SoftLabelError(f"{path}: neither keys nor texts: not a soft-label file")
    try:
        array = data["texts"]  # allow_pickle=False: an object (pickled) array raises ValueError here
    except ValueError:
        raise LegacyCacheError(
            f"{path} is a soft-label cache file of the old format (texts pickled), which is not loaded because "
            "unpickling a file runs code from it: delete it, it will be recomputed (a teacher's cache) or "
            "re-share it from a fresh cache") from None
    if array.dtype.kind != "U":
        raise SoftLabelError(f"{path}: texts of dtype {array.dtype} are not texts")
    return [str(t) for t in array]


def text_key(text: str) -> bytes:
    """The name of a text in a shareable file: a 16-byte SHA-256 prefix (collision odds ~n^2 / 2^129)."""
    return hashlib.sha256(text.encode()).digest()[:KEY_BYTES]


@dataclass
class SoftLabels:
    """Teacher logits per text, columns in ``models.labels`` order (the student's head order)."""

    fingerprint: str
    teacher: str
    texts: list[str]
    sentiment: np.ndarray
    topic: np.ndarray
    max_length: int | None = None  # the teacher's token limit when scoring (part of the fingerprint)
    keys: list[bytes] | None = None  # shareable files: text_key of each row instead of ``texts``
    heads: tuple[str, ...] = HEADS  # the heads whose logits are meaningful (a shareable file may drop one)

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sentiment_logits, topic_logits, has_teacher) aligned with ``texts`` (zeros where absent)."""
        if self.keys is not None:
            row, wanted = {k: i for i, k in enumerate(self.keys)}, [text_key(t) for t in texts]
        else:
            row, wanted = {t: i for i, t in enumerate(self.texts)}, list(texts)
        hit = np.array([t in row for t in wanted], dtype=bool)
        idx = np.array([row.get(t, 0) for t in wanted], dtype=np.int64)
        s = np.where(hit[:, None], self.sentiment[idx], 0).astype(np.float32) if len(texts) else np.zeros((0, 3), np.float32)
        t = np.where(hit[:, None], self.topic[idx], 0).astype(np.float32) if len(texts) else np.zeros((0, len(TOPIC_LABELS)), np.float32)
        return s, t, hit

    def require(self, head: str, path: Path | str) -> None:
        """Refuse to distil a head this file carries no real logits for (zeros would teach a uniform guess)."""
        if head not in self.heads:
            raise SoftLabelError(f"soft labels {path} carry only {', '.join(self.heads)} (teacher {self.teacher}); "
                                 f"they cannot teach the {head} head")

    def shareable(self, heads: Sequence[str] = HEADS) -> SoftLabels:
        """A copy without the texts (named by ``text_key``) and with only ``heads`` (the others zeroed).

        Why: the texts belong to the datasets (licensed, never copied into the repo) while the logits are the
        expensive part; a teacher trained for one head gives noise on the other, so that head is left out."""
        unknown = sorted(set(heads) - set(HEADS))
        if unknown or not heads:
            raise SoftLabelError(f"heads must be some of {', '.join(HEADS)}, got {list(heads)}")
        kept = tuple(h for h in HEADS if h in heads and h in self.heads)
        keys = self.keys if self.keys is not None else [text_key(t) for t in self.texts]
        if len(set(keys)) != len(keys):
            raise SoftLabelError("two texts share a key")  # 2^-128 odds; checked rather than assumed
        return SoftLabels(self.fingerprint, self.teacher, [],
                          self.sentiment if "sentiment" in kept else np.zeros_like(self.sentiment),
                          self.topic if "topic" in kept else np.zeros_like(self.topic),
                          self.max_length, keys=list(keys), heads=kept)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        # Texts as one JSON string in a unicode array: nothing in the file needs pickle to be read back (an object
        # array would, and unpickling a file is running it). JSON rather than a per-text unicode array, whose rows
        # are all as wide as the longest text and lose trailing NULs.
        names = ({"keys": np.frombuffer(b"".join(self.keys), np.uint8).reshape(-1, KEY_BYTES)} if self.keys is not None
                 else {TEXTS_ARRAY: np.array(json.dumps(list(self.texts), ensure_ascii=False))})
        np.savez_compressed(tmp, sentiment=self.sentiment, topic=self.topic,
                            meta=np.array(json.dumps({"fingerprint": self.fingerprint, "teacher": self.teacher,
                                                      "version": CACHE_VERSION, "max_length": self.max_length,
                                                      "heads": list(self.heads)})),
                            **names)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> SoftLabels:
        """Read a cache file or a shareable copy, never with pickle (a foreign file fails: ValueError / BadZipFile /
        KeyError). A cache file written before the texts were stored as JSON holds them as a pickled object array:
        it is refused (``LegacyCacheError``), since unpickling a file that may come from elsewhere runs its code."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            keys = [bytes(row) for row in data["keys"]] if "keys" in data.files else None
            sentiment, topic = data["sentiment"].astype(np.float32), data["topic"].astype(np.float32)
            texts: list[str] = []
            if keys is None:
                texts = _read_texts(data, path)
        return cls(meta["fingerprint"], meta["teacher"], texts, sentiment, topic, meta.get("max_length"), keys=keys,
                   heads=tuple(meta.get("heads", HEADS)))

    @staticmethod
    def read_meta(path: Path) -> dict:
        """The cache file's metadata without its arrays (cheap: looking for reusable scores). No pickle: a file
        that is not an .npz of ours raises ValueError/BadZipFile rather than being unpickled."""
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["meta"]))


def blend_soft_labels(sources: Sequence[SoftLabels], heads: Sequence[str]) -> SoftLabels:
    """An ensemble teacher: the mean of several teachers' logits for ``heads``, over the texts all of them scored.

    Why: teachers trained with other seeds (or on other CPUs) err on different rows, and the mean of their
    logits (a normalised product of their distributions, softened by the student's own KD temperature) is
    usually a better target than any one of them. Only texts every source scored are kept (a row with one
    teacher's opinion would be a different teacher); sources that scored at another token limit are refused."""
    if len(sources) < 2:
        raise SoftLabelError("blending needs at least two soft-label files")
    keyed = [source.shareable(heads) for source in sources]  # checks the head names; keys in place of texts
    for head in heads:
        for source in sources:
            source.require(head, source.teacher)
    limits = {source.max_length for source in sources}
    if len(limits) > 1:
        raise SoftLabelError(f"the sources scored at different token limits {sorted(map(str, limits))}")
    common = set(keyed[0].keys or [])
    for source in keyed[1:]:
        common &= set(source.keys or [])
    keys = [k for k in (keyed[0].keys or []) if k in common]
    sentiment = np.zeros((len(keys), len(SENTIMENT_LABELS)), np.float32)
    topic = np.zeros((len(keys), len(TOPIC_LABELS)), np.float32)
    for source in keyed:
        row = {k: i for i, k in enumerate(source.keys or [])}
        idx = np.array([row[k] for k in keys], dtype=np.int64)
        sentiment += source.sentiment[idx] / len(keyed)
        topic += source.topic[idx] / len(keyed)
    fingerprint = "sha256:" + hashlib.sha256(
        ("mean-logits\x1f" + "\x1f".join(",".join(heads) + ":" + s.fingerprint for s in sources)).encode()).hexdigest()
    teacher = "mean(" + ", ".join(source.teacher for source in sources) + ")"
    return SoftLabels(fingerprint, teacher, [], sentiment, topic, limits.pop(), keys=keys,
                      heads=tuple(h for h in HEADS if h in heads))


@dataclass(frozen=True)
class TeacherRuntime:
    """The runtime that scores a teacher: what its logits depend on besides the weights (int8 ONNX on CPU, torch
    fp32 on CPU and torch bf16/fp16 on CUDA give logits that differ by ~1e-2), and the weights file it loads."""

    backend: str  # onnx | torch
    device: str  # cpu | cuda
    precision: str  # int8 | fp32 | bf16 | fp16
    weights: Path | None

    @property
    def tag(self) -> str:
        return f"{self.backend}-{self.device}-{self.precision}"


def teacher_runtime(teacher_dir: Path | str, *, device: str = "auto", backend: str = "auto",
                    cuda_ok: bool | None = None, bf16_ok: bool | None = None) -> TeacherRuntime:
    """The runtime ``load_engine(teacher_dir, device=device, backend=backend)`` picks, without loading the model.

    The device and backend are ``models.engine.choose_runtime``'s, the rule ``load_engine`` itself follows (torch on
    CUDA when the artifact has torch weights, else int8 ONNX on CPU when it has the export, else torch fp32 on CPU);
    ``teacher_soft_labels`` then loads exactly this runtime and checks the engine reports it. ``cuda_ok`` /
    ``bf16_ok``: what this machine offers (None = ask it), given by tests to describe a GPU machine."""
    teacher_dir = Path(teacher_dir)
    chosen_device, chosen_backend = choose_runtime(teacher_dir, device, backend, cuda_ok=cuda_ok)
    if chosen_backend == "onnx":
        return TeacherRuntime("onnx", "cpu", "int8", teacher_dir / ONNX_INT8_FILE)
    if chosen_device == "cuda":
        if bf16_ok is None:
            import torch

            bf16_ok = bool(torch.cuda.is_bf16_supported())
        precision = "bf16" if bf16_ok else "fp16"  # models.torch_backend.TorchRunner's autocast on CUDA
    else:
        precision = "fp32"
    return TeacherRuntime("torch", chosen_device, precision, torch_weights_file(teacher_dir))


def teacher_identity(teacher_dir: Path, runtime: TeacherRuntime | None = None) -> str:
    """Version, hash of the weights file the scoring runtime loads, and that runtime (backend-device-precision).

    Why the runtime: the same artifact scored by int8 ONNX on a CPU and by torch bf16 on a GPU gives different
    logits; one cache (or one reuse across caches) must never mix them. ``runtime``: default, the one
    ``load_engine`` picks on this machine (``teacher_runtime``)."""
    teacher_dir = Path(teacher_dir)
    info = read_info(teacher_dir)
    runtime = runtime or teacher_runtime(teacher_dir)
    weights = runtime.weights
    digest = file_sha256(weights) if weights is not None and weights.is_file() else "no-weights"
    return f"{info.version}@{digest}+{runtime.tag}"


def soft_label_fingerprint(teacher: str, texts: Sequence[str], max_length: int | None) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}\x1f{teacher}\x1f{max_length}\x1e".encode())
    for text in sorted(set(texts)):
        digest.update(text.encode() + b"\x1e")
    return "sha256:" + digest.hexdigest()


def _reorder(logits: np.ndarray, have: Sequence[str], want: Sequence[str]) -> np.ndarray:
    return logits[:, [list(have).index(name) for name in want]]


def _reusable_scores(cache_dir: Path, teacher: str, max_length: int | None, want: set[str]) -> dict[str, tuple]:
    """Logits already computed by the same teacher at the same token limit, from any cache file, for ``want``.

    A changed transfer set (say ``--unlabeled`` 3,000 -> 15,000) then costs only its new texts. Files written
    before the token limit was recorded count as ``None`` (the artifact's own limit): the trainer never passed one."""
    found: dict[str, tuple] = {}
    for path in sorted(cache_dir.glob("soft-labels-*.npz"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            meta = SoftLabels.read_meta(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            continue  # a torn or foreign file is not a source of scores
        if meta.get("teacher") != teacher or meta.get("max_length") != max_length:
            continue
        try:
            old = SoftLabels.load(path)
        except LegacyCacheError as exc:  # pickled texts: never unpickled, so not a source of scores
            log.warning("distill.legacy_cache_skipped", path=str(path), detail=str(exc))
            continue
        if old.keys is not None or old.heads != HEADS:
            continue  # a shareable copy: no texts to match, maybe one head
        for i, text in enumerate(old.texts):
            if text in want and text not in found:
                found[text] = (old.sentiment[i], old.topic[i])
        if len(found) == len(want):
            break
    return found


def teacher_soft_labels(
    teacher_dir: Path | str,
    texts: Sequence[str],
    cache_dir: Path | str,
    *,
    threads: int | None = None,
    max_length: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    device: str = "auto",
    backend: str = "auto",
) -> tuple[SoftLabels, Path, int]:
    """Soft labels for ``texts`` from the teacher: (labels, cache path, texts the teacher scored now).

    Scored once per fingerprint; texts another cache file of the same teacher already holds are taken from it
    (0 scored = a full cache hit). A merged file matches a fresh scoring up to the float noise of batching
    (~1e-6 for fp32 weights; a dynamic-int8 teacher moves probabilities by ~1e-2 with its batch). The teacher's
    identity names the runtime that scores (``device``/``backend`` as ``load_engine`` takes them), so scores of
    another runtime (int8 ONNX on CPU vs torch bf16 on CUDA) are neither served nor merged."""
    teacher_dir = Path(teacher_dir)
    cache_dir = Path(cache_dir)
    runtime = teacher_runtime(teacher_dir, device=device, backend=backend)
    teacher = teacher_identity(teacher_dir, runtime)
    unique = sorted(set(texts))
    fingerprint = soft_label_fingerprint(teacher, unique, max_length)
    path = cache_dir / f"soft-labels-{fingerprint.split(':')[1][:20]}.npz"
    if path.is_file():
        try:
            cached = SoftLabels.load(path)
        except LegacyCacheError as exc:  # rescored below and overwritten
            log.warning("distill.legacy_cache_replaced", path=str(path), detail=str(exc))
        else:
            if cached.fingerprint == fingerprint:
                log.info("distill.cache_hit", path=str(path), texts=len(unique))
                return cached, path, 0
    known = _reusable_scores(cache_dir, teacher, max_length, set(unique)) if cache_dir.is_dir() else {}
    todo = [t for t in unique if t not in known]
    info = read_info(teacher_dir)
    scored_s = np.zeros((0, len(SENTIMENT_LABELS)), np.float32)
    scored_t = np.zeros((0, len(TOPIC_LABELS)), np.float32)
    if todo:
        engine = load_engine(teacher_dir, device=runtime.device, backend=runtime.backend, threads=threads,
                             max_length=max_length)
        ran = engine.describe()
        if (ran["backend"], ran["device"], ran["precision"]) != (runtime.backend, runtime.device, runtime.precision):
            raise RuntimeError(f"the teacher {teacher_dir} runs on {ran['backend']}-{ran['device']}-{ran['precision']}, "
                               f"not the {runtime.tag} its soft labels would be filed under")
        sentiment, topic = [], []
        for start in tqdm(range(0, len(todo), batch_size * 8), desc="teacher soft labels", disable=not progress,
                          unit="chunk"):
            s, t = engine.predict_logits(todo[start : start + batch_size * 8])
            sentiment.append(s)
            topic.append(t)
        scored_s = _reorder(np.concatenate(sentiment), info.labels["sentiment"], SENTIMENT_LABELS)
        scored_t = _reorder(np.concatenate(topic), info.labels["topic"], TOPIC_LABELS)
    new = {text: (scored_s[i], scored_t[i]) for i, text in enumerate(todo)}
    rows = [known[t] if t in known else new[t] for t in unique]
    s_all = np.stack([r[0] for r in rows]) if rows else np.zeros((0, len(SENTIMENT_LABELS)), np.float32)
    t_all = np.stack([r[1] for r in rows]) if rows else np.zeros((0, len(TOPIC_LABELS)), np.float32)
    labels = SoftLabels(fingerprint, teacher, unique, s_all.astype(np.float32), t_all.astype(np.float32), max_length)
    labels.save(path)
    log.info("distill.scored", path=str(path), texts=len(unique), scored=len(todo), reused=len(known),
             teacher=teacher)
    return labels, path, len(todo)
