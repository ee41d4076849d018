"""Training: labeled datasets, multi-task fine-tuning, evaluation, model cards, retraining and promotion."""
