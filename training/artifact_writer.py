"""Turn a trained network into a complete, self-describing artifact.

Writes the weights and the int8 ONNX export (via ``models.export``), the exact training config with data
fingerprints, dev metrics for both the fp32 model and the CPU serving path, confusion-matrix PNGs, a
training-curve PNG and a markdown model card.
"""

from __future__ import annotations

import structlog
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.artifact import CARD_FILE, METRICS_FILE, TRAINING_CONFIG_FILE, ArtifactInfo
from models.export import export_onnx_int8, save_torch_artifact
from models.labels import label_maps
from models.network import MultiTaskClassifier
from training.config import TrainConfig
from training.datasets import Splits
from training.evaluation import evaluate, plot_confusion_matrix

log = structlog.get_logger(__name__)


def write_artifact(
    *,
    model: MultiTaskClassifier,
    tokenizer: Any,
    config: TrainConfig,
    version: str,
    base: Path,
    splits: Splits,
    fingerprints: dict[str, str],
    data_fingerprint: str,
    history: Any,
    best_epoch: int,
    train_size: int,
) -> Path:
    out = Path(config.output_dir)
    info = ArtifactInfo(
        version=version,
        base_encoder=str(base.name if base.name != "model" else "all-MiniLM-L6-v2"),
        max_length=config.max_length,
        labels=label_maps(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        parent_version=config.parent_version,
    )
    save_torch_artifact(model, tokenizer, out, info)
    record = {
        "config": config.to_record(),
        "command": " ".join(["marketmood", *sys.argv[1:]]) if sys.argv and "marketmood" in sys.argv[0] else None,
        "data_fingerprints": fingerprints,
        "train_examples_fingerprint": data_fingerprint,
        "train_size": train_size,
        "dev_sizes": {k: len(v) for k, v in splits.dev.items()},
        "best_epoch": best_epoch,
        "history": {"steps": history.steps, "train_loss": history.train_loss, "epochs": history.epochs},
        "environment": {"python": platform.python_version(), "torch": _version("torch"),
                        "transformers": _version("transformers"), "onnxruntime": _version("onnxruntime")},
    }
    (out / TRAINING_CONFIG_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")

    from models.engine import load_engine

    metrics: dict[str, Any] = {"version": version, "dev": {}}
    paths = {"fp32": load_engine(out, backend="torch", device="cpu")}
    if config.export_onnx:
        export_onnx_int8(out)
        paths["cpu_int8"] = load_engine(out, backend="onnx", device="cpu")
    for path_name, engine in paths.items():
        for dev_name, examples in splits.dev.items():
            for task, task_result in evaluate(engine, examples).items():
                metrics["dev"].setdefault(dev_name, {})[path_name] = task_result
                if path_name == ("cpu_int8" if config.export_onnx else "fp32"):
                    plot_confusion_matrix(task_result, f"{dev_name} ({task}, {path_name})", out / f"confusion_{dev_name}.png")
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    plot_training_curve(history, out / "training_curve.png")
    (out / CARD_FILE).write_text(render_card(info, record, metrics))
    log.info("training.artifact", path=str(out), version=version)
    return out


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def plot_training_curve(history: Any, path: Path) -> Path:
    """Train loss per step and mean dev macro-F1 per epoch on twin axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(history.steps, history.train_loss, color="tab:blue", label="train loss (EMA)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss", color="tab:blue")
    if history.epochs:
        ax2 = ax.twinx()
        steps = [e["step"] for e in history.epochs]
        ax2.plot(steps, [e["mean_dev_macro_f1"] for e in history.epochs], "o-", color="tab:red", label="mean dev macro-F1")
        for name in history.epochs[0]["dev"]:
            ax2.plot(steps, [e["dev"][name]["accuracy"] for e in history.epochs], "--", alpha=0.6, label=f"{name} acc")
        ax2.set_ylabel("dev score")
        ax2.legend(loc="lower right", fontsize=7)
    ax.set_title("Training curve")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_card(info: ArtifactInfo, record: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Markdown model card: what, how trained, on what data, how good (per class), where it fails."""
    cfg = record["config"]
    lines = [
        f"# MarketMood model `{info.version}`",
        "",
        "One shared encoder, mean pooling, two linear heads: **sentiment** (negative / neutral / positive) and",
        f"**topic** ({len(info.labels['topic'])} financial topics of the tweet-topic set), one forward pass per batch.",
        "",
        "## Training",
        f"- Base encoder: `{info.base_encoder}`; max_length {info.max_length}; created {info.created_at}.",
        f"- Command: `{record.get('command') or 'training.trainer.train(config)'}`",
        f"- Epochs {cfg['epochs']} (best epoch {record['best_epoch']}), lr {cfg['lr']}, batch {cfg['batch_size']}"
        f" x accum {cfg['grad_accum_steps']}, weight decay {cfg['weight_decay']}, warmup {cfg['warmup_ratio']},"
        f" label smoothing {cfg['label_smoothing']}, seed {cfg['seed']}, max_steps {cfg['max_steps']},"
        f" limit_per_dataset {cfg['limit_per_dataset']}.",
        f"- Train examples: {record['train_size']}; dev sizes: {record['dev_sizes']}.",
        "- Data fingerprints:",
        *[f"  - `{name}`: `{fp}`" for name, fp in record["data_fingerprints"].items()],
        "",
        "Dev splits: PhraseBank uses its shipped `valid.csv`; the other sets are stratified, seeded splits carved",
        "from their train files (10%, FiQA 15%); no dev text is trained on.",
        "",
        "## Dev results",
        "",
        "| dev set | task | n | fp32 acc | fp32 macro-F1 | CPU int8 acc | CPU int8 macro-F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for dev_name, paths in metrics["dev"].items():
        fp = paths.get("fp32", {})
        q = paths.get("cpu_int8", {})
        lines.append(
            f"| {dev_name} | {fp.get('task', q.get('task'))} | {fp.get('n', q.get('n'))} | {_f(fp, 'accuracy')} |"
            f" {_f(fp, 'macro_f1')} | {_f(q, 'accuracy')} | {_f(q, 'macro_f1')} |"
        )
    lines += ["", "## Per-class results (serving path)", ""]
    for dev_name, paths in metrics["dev"].items():
        result = paths.get("cpu_int8") or paths.get("fp32")
        lines += [f"### {dev_name}", "", f"![confusion matrix](confusion_{dev_name}.png)", "",
                  "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for cls, row in result["per_class"].items():
            if row["support"]:
                lines.append(f"| {cls} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
        lines.append("")
    lines += [
        "## Training curve",
        "",
        "![training curve](training_curve.png)",
        "",
        "## Limits",
        "- English financial headlines and tweets; other languages and long articles (truncated to"
        f" {info.max_length} tokens) are out of distribution.",
        "- PhraseBank is licensed CC BY-NC-SA 3.0 (non-commercial); the tweet sets are MIT; FiQA is research use.",
        "- Topic labels come from tweets; news-wire headlines may shift the topic distribution.",
        "",
    ]
    return "\n".join(lines)


def _f(result: dict[str, Any], key: str) -> str:
    return f"{result[key]:.3f}" if key in result else "-"
