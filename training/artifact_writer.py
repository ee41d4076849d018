"""Turn a trained network into a complete, self-describing artifact.

Writes the weights and the int8 ONNX export (via ``models.export``), the exact training config with data
fingerprints and the reproducibility record (library versions, code commit, environment hash, base-weights
hash, threads), dev metrics with bootstrap 95% intervals for both the fp32 model and the CPU serving path,
calibration (temperatures, ECE before/after, reliability diagram), confusion-matrix PNGs, a training-curve
PNG and a markdown model card.
"""

from __future__ import annotations

import json
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from models.artifact import CARD_FILE, METRICS_FILE, TRAINING_CONFIG_FILE, ArtifactInfo
from models.export import export_onnx_int8, save_torch_artifact
from models.labels import label_maps
from models.network import MultiTaskClassifier
from training.config import TrainConfig
from training.datasets import Splits, near_duplicate_key
from training.calibration import plot_reliability
from training.evaluation import evaluate, plot_confusion_matrix
from training.reproducibility import environment_record

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
    extras: dict[str, Any] | None = None,
) -> Path:
    extras = dict(extras or {})
    calibration = extras.pop("calibration", None)
    out = Path(config.output_dir)
    info = ArtifactInfo(
        version=version,
        base_encoder=str(base.name if base.name != "model" else "all-MiniLM-L6-v2"),
        max_length=config.max_length,
        labels=label_maps(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        parent_version=config.parent_version,
        preprocessing=config.preprocessing,
        temperatures=dict(calibration["temperatures"]) if calibration else {},
    )
    save_torch_artifact(model, tokenizer, out, info, fp16_copy=config.fp16_copy)
    record = {
        "config": config.to_record(),
        # quoted, so that pasting it into a shell reruns it
        "command": shlex.join(["marketmood", *sys.argv[1:]]) if sys.argv and "marketmood" in sys.argv[0] else None,
        "data_fingerprints": fingerprints,
        "train_examples_fingerprint": data_fingerprint,
        "train_size": train_size,
        "dev_sizes": {k: len(v) for k, v in splits.dev.items()},
        "best_epoch": best_epoch,
        "history": {"steps": history.steps, "train_loss": history.train_loss, "epochs": history.epochs},
        "split_method": splits.split_method,
        **extras,
        "calibration": {k: v for k, v in calibration.items() if k != "curves"} if calibration else None,
        "environment": environment_record(base, int(extras.get("threads") or 0)),
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
            # a cluster split keeps near-duplicates together: the intervals resample them together too
            key = near_duplicate_key if splits.split_method == "cluster" else None
            for task, task_result in evaluate(engine, examples, intervals=True, cluster_key=key).items():
                metrics["dev"].setdefault(dev_name, {})[path_name] = task_result
                if path_name == ("cpu_int8" if config.export_onnx else "fp32"):
                    plot_confusion_matrix(task_result, f"{dev_name} ({task}, {path_name})", out / f"confusion_{dev_name}.png")
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    if history.steps:  # a weight average (training/soup.py) trained nothing itself: no curve of its own
        plot_training_curve(history, out / "training_curve.png")
    if calibration and calibration.get("curves"):
        plot_reliability(calibration["curves"], out / "reliability.png")
    (out / CARD_FILE).write_text(render_card(info, record, metrics))
    log.info("training.artifact", path=str(out), version=version)
    return out


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
        ax2.plot(steps, [e.get("selection_score", e["mean_dev_macro_f1"]) for e in history.epochs], "o-", color="tab:red",
                 label="selection macro-F1")
        for name in history.epochs[0]["dev"]:
            ax2.plot(steps, [e["dev"][name]["accuracy"] for e in history.epochs], "--", alpha=0.6, label=f"{name} acc (select)")
        ax2.set_ylabel("selection-split score")
        ax2.legend(loc="lower right", fontsize=7)
    ax.set_title("Training curve")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_card(info: ArtifactInfo, record: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Markdown model card: what, how trained, on what data, how good (with intervals), how calibrated, limits."""
    cfg = record["config"]
    env = record.get("environment", {})
    selection = record.get("selection_split", "dev")
    lines = [
        f"# MarketMood model `{info.version}`",
        "",
        "One shared encoder, mean pooling, two linear heads: **sentiment** (negative / neutral / positive) and",
        f"**topic** ({len(info.labels['topic'])} financial topics of the tweet-topic set), one forward pass per batch.",
        "",
        "## Training",
        f"- Base encoder: `{info.base_encoder}`; max_length {info.max_length}; created {info.created_at}.",
        f"- Text preprocessing: `{info.preprocessing}` (applied identically by the engine); added tokens:"
        f" {(record.get('added_tokens') or {}).get('count', 0)} (`[url]` and frequent cashtags).",
        f"- Command: `{record.get('command') or 'training.trainer.train(config)'}`",
        f"- Epochs {cfg['epochs']} (best epoch {record['best_epoch']}), lr {cfg['lr']}, batch {cfg['batch_size']}"
        f" x accum {cfg['grad_accum_steps']}, weight decay {cfg['weight_decay']}, warmup {cfg['warmup_ratio']},"
        f" label smoothing {cfg['label_smoothing']}, seed {cfg['seed']}, max_steps {cfg['max_steps']},"
        f" limit_per_dataset {cfg['limit_per_dataset']}.",
        f"- Mixing: per-source sampling weights {cfg.get('source_weights') or '{} (all 1.0)'}; per-head loss weights"
        f" {cfg.get('head_weights')}; train rows per source {record.get('train_source_sizes')}.",
        *_soup_lines(record.get("soup")),
        f"- LoRA: {record['lora'] if record.get('lora') else 'no (full fine-tune)'}.",
        f"- Distillation: {_distill_line(record.get('distillation'))}",
        f"- Train examples: {record['train_size']}; dev sizes: {record['dev_sizes']}; selection split: `{selection}`"
        f" {record.get('select_sizes', {})}.",
        "- Data fingerprints:",
        *[f"  - `{name}`: `{fp}`" for name, fp in record["data_fingerprints"].items()],
        "",
        f"Splits (`{record.get('split_method', 'exact')}`): PhraseBank reports on its shipped `valid.csv`; the other sets'",
        "dev splits are seeded, label-stratified splits of whole near-duplicate clusters (URLs, entities, mojibake,",
        "punctuation, case folded) carved from their train files (10%, FiQA 15%). Epoch, temperature and",
        f"distillation settings were chosen on the `{selection}` split, checkpoint score = macro-F1 weighted by set size"
        f" (`{cfg.get('selection_weighting', 'mean')}`)."
        + (" **The dev numbers below were also used for selection: optimistic.**" if selection == "dev" else
           " The dev numbers below were used for no choice."),
        "",
        "## Dev results (bootstrap 95% intervals, 1000 resamples"
        + (" of near-duplicate clusters)" if record.get("split_method") == "cluster" else ")"),
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
    calibration = record.get("calibration")
    if calibration:
        lines += ["", "## Calibration", "",
                  f"Softmax temperature per head fitted by NLL on the `{selection}` split and applied by the engine to"
                  " probabilities (labels unchanged). Expected calibration error (10 bins, top label) on the dev sets, fp32"
                  + (" (after: cross-fitted in 2 folds, since the temperature was fitted on these rows):"
                     if any(e.get("after_cross_fitted") for e in calibration.get("ece", {}).values()) else ":"),
                  "", "| head | temperature | n (dev) | ECE before | ECE after |", "|---|---|---|---|---|"]
        for head, ece in calibration.get("ece", {}).items():
            lines.append(f"| {head} | {calibration['temperatures'][head]:.3f} | {ece['n']} | {ece['before']:.4f} | {ece['after']:.4f} |")
        lines += ["", "![reliability diagram](reliability.png)"]
    lines += ["", "## Per-class results (serving path)", ""]
    for dev_name, paths in metrics["dev"].items():
        result = paths.get("cpu_int8") or paths.get("fp32")
        lines += [f"### {dev_name}", "", f"![confusion matrix](confusion_{dev_name}.png)", "",
                  "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for cls, row in result["per_class"].items():
            if row["support"]:
                lines.append(f"| {cls} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
        lines.append("")
    packages = env.get("packages", {})
    code = env.get("code", {})
    lines += [
        "## Reproducibility",
        "",
        f"- Code commit `{code.get('commit')}`{' (models/ or training/ modified)' if code.get('dirty') else ''}; python"
        f" {env.get('python')}; {env.get('platform')}; torch threads {env.get('threads')}.",
        "- " + ", ".join(f"{k} {v}" for k, v in packages.items() if v),
        f"- Resolved environment (sorted name==version of every installed distribution) sha256: `{env.get('environment_sha256')}`",
        f"- Base weights sha256: `{env.get('base_weights_sha256')}`",
        f"- Feedback snapshot: `{cfg.get('feedback_snapshot')}`",
        "",
        *(["## Training curve", "", "![training curve](training_curve.png)", ""] if record["history"]["steps"] else []),
        "## Limits",
        "- English financial headlines and tweets; other languages and long articles (truncated to"
        f" {info.max_length} tokens) are out of distribution.",
        "- PhraseBank is licensed CC BY-NC-SA 3.0 (non-commercial); the tweet sets are MIT; FiQA is research use.",
        "- Topic labels come from tweets; news-wire headlines may shift the topic distribution.",
        "",
    ]
    return "\n".join(lines)


def _soup_lines(soup: dict[str, Any] | None) -> list[str]:
    """The card's account of a weight average: which artifacts, each one's selection score and the average's."""
    if not soup:
        return []
    return [
        f"- **Weight average (model soup)** of {len(soup['ingredients'])} artifacts; selection score"
        f" {soup['selection_score']:.4f}. The other lines of this section are the first ingredient's settings.",
        *[f"  - `{i['version']}` (weight {i.get('weight', 1 / len(soup['ingredients'])):.3f}, best epoch"
          f" {i['best_epoch']}, selection score {i['selection_score']:.4f}): `{i['command']}`"
          for i in soup["ingredients"]],
    ]


def _distill_line(distillation: dict[str, Any] | None) -> str:
    if not distillation:
        return "no."
    topic = distillation.get("topic_teacher")
    second = (f" topic head from teacher `{topic['teacher']}` (soft-label cache `{topic['fingerprint']}`),"
              if topic and topic["teacher"] != distillation["teacher"] else "")
    heads, only = distillation.get("heads"), distillation.get("unlabeled_only")
    restriction = f" ({', '.join(only)} only on rows without its gold label)" if only else ""
    scope = f" heads {', '.join(heads)}{restriction}," if heads else ""
    return (f"teacher `{distillation['teacher']}`,{second}{scope} alpha {distillation['alpha']},"
            f" T {distillation['temperature']},"
            f" {distillation['rows_with_teacher']} rows with soft labels ({distillation.get('transfer_texts', 0)} unlabeled"
            f" transfer texts), soft-label cache `{distillation['fingerprint']}`.")


def _f(result: dict[str, Any], key: str) -> str:
    if key not in result:
        return "-"
    ci = result.get("ci95", {}).get(key)
    return f"{result[key]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{result[key]:.3f}"
