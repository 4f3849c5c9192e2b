"""The layout of a run folder (`--output DIR`), spelled here and nowhere else: training writes
it, `--resume` and the export read it.

    DIR/config.json        every option and the model config
    DIR/tokenizer/         the vocabulary (SentencePiece model, or a tagging vocabulary)
    DIR/logs/train/, DIR/logs/validation/   TensorBoard event files
    DIR/checkpoints/       for --resume
    DIR/model.keras        the trained model
    DIR/export/<version>/  SavedModels for TF Serving
    DIR/metrics.json       the final metrics
"""

import json
import os


class RunPaths:
    def __init__(self, output):
        self.output = output
        self.config = os.path.join(output, "config.json")
        self.tokenizer = os.path.join(output, "tokenizer")
        self.logs = os.path.join(output, "logs")
        self.train_logs = os.path.join(self.logs, "train")
        self.validation_logs = os.path.join(self.logs, "validation")
        self.checkpoints = os.path.join(output, "checkpoints")
        self.model = os.path.join(output, "model.keras")
        self.export = os.path.join(output, "export")
        self.metrics = os.path.join(output, "metrics.json")

    def saved_config(self):
        """config.json as written by training: {"options": {...}, "model": {...}}."""
        if not os.path.exists(self.config):
            raise FileNotFoundError(
                f"{self.config} does not exist: {self.output} holds no training run; train first "
                "(python train.py --output DIR)."
            )
        with open(self.config, encoding="utf-8") as f:
            return json.load(f)
