"""Training on a prepared corpus (`--data prepared:DIR`, made by `python -m
tfx_transformer.prepare`): its tokenizer, its held-out validation text, and training batches
streamed from this worker's shards (`data.shards.BatchStream`) instead of a list in memory."""

import os

import numpy as np

from tfx_transformer.data import DataError, Tokenizer, batch_indices
from tfx_transformer.data.shards import (
    BatchStream,
    ShapeAgreement,
    StreamEpoch,
    estimate_batches,
    model_checksum,
    read_manifest,
    stream_fingerprint,
)
from tfx_transformer.tasks.translation import data as data_lib

PREFIX = "prepared:"


def is_prepared(spec):
    return bool(spec) and spec.startswith(PREFIX)


class PreparedCorpus:
    """A prepared folder as one run reads it."""

    def __init__(self, spec):
        self.folder = spec[len(PREFIX):]
        self.manifest = read_manifest(self.folder)
        info = self.manifest["tokenizer"]
        self.tokenizer = Tokenizer.load(os.path.join(self.folder, info["folder"]))
        if model_checksum(self.tokenizer.model_proto) != info["sha256"]:
            raise DataError(
                f"{spec}: its tokenizer/ is not the one its shards were encoded with (sha256 "
                "differs from the manifest's); prepare the corpus again."
            )
        self.stream = None
        self._estimates = {}

    @property
    def origin(self):
        return f"{PREFIX}{self.folder} ({self.manifest['source']})"

    def check_run_tokenizer(self, run_tokenizer):
        """--resume: the run's saved tokenizer must be the one the shards were encoded with."""
        if model_checksum(run_tokenizer.model_proto) != self.manifest["tokenizer"]["sha256"]:
            raise DataError(
                f"{PREFIX}{self.folder} was encoded with another tokenizer than the run being "
                "resumed (sha256 of tokenizer/sentencepiece.model differs): its token ids would "
                "mean other pieces. Resume with the prepared set the run started with."
            )

    def validation_spec(self):
        files = self.manifest["validation_files"]
        if not self.manifest["validation_examples"]:
            raise DataError(
                f"{PREFIX}{self.folder} holds no validation pairs (prepared with --validation 0); "
                "give --valid-data."
            )
        return "parallel:" + ",".join(os.path.join(self.folder, name) for name in files)

    def batch_lengths(self, max_length, long_pairs):
        """{batching length: pairs} of the training pairs, from the manifest's histogram."""
        return data_lib.limited_histogram(self.manifest["length_histogram"], max_length, long_pairs)

    def open_stream(self, options, max_length, shapes, worker, workers, checkpoints, gather=None):
        """This worker's BatchStream; window anchors saved in `checkpoints`; `gather`: the
        collective by which the workers agree on each step's shape (None: they need not)."""
        settings = dict(
            manifest=self.manifest["tokenizer"]["sha256"], shards=len(self.manifest["shards"]),
            examples=self.manifest["examples"], seed=options.seed, window=options.stream_window,
            batch_tokens=options.batch_tokens, max_length=max_length,
            long_pairs=options.long_pairs, shapes=repr(shapes),
        )
        anchors = os.path.join(
            checkpoints, f"stream-{stream_fingerprint(**settings)}-worker{worker}-of-{workers}.json"
        )

        def window_batches(examples, seed):
            encoded = data_lib.limit_pairs(examples, max_length, options.long_pairs)
            if not encoded.sources:
                return []
            return data_lib.make_batches(encoded, options.batch_tokens, max_length, seed, shapes)[0]

        agreement = None
        if gather is not None:
            agreement = ShapeAgreement(shapes.widths(max_length), gather)
        self.stream = BatchStream(self.folder, self.manifest, window_batches, options.stream_window,
                                  options.seed, worker, workers, anchors, agreement)
        return self.stream

    def epoch(self, epoch, options, max_length, shapes, workers):
        """The StreamEpoch of training epoch `epoch`, and the padding estimated for its batches."""
        key = (max_length, repr(shapes), workers)
        if key not in self._estimates:
            self._estimates[key] = self.estimate(options, max_length, shapes, workers)
        batches, padding = self._estimates[key]
        return StreamEpoch(self.stream, epoch, batches), padding

    def estimate(self, options, max_length, shapes, workers):
        """(batches in an epoch of all workers, their padding), from the manifest (see
        `data.shards.estimate_batches`)."""
        lengths = self.batch_lengths(max_length, options.long_pairs)
        kept = sum(lengths.values()) / max(self.manifest["examples"], 1)
        shards = self.manifest["shards"]
        worker_examples = [kept * sum(s["examples"] for s in shards[w::workers])
                           for w in range(workers)]

        def count_batches(window_lengths):
            chunks = batch_indices(window_lengths, options.batch_tokens, max_length, shapes=shapes)
            padded = 0
            for chunk in chunks:
                longest = int(window_lengths[chunk].max())
                shape = shapes.shape_for(longest, options.batch_tokens, max_length)
                rows, width = shape or (len(chunk), -(-longest // shapes.multiple) * shapes.multiple)
                padded += rows * width
            return len(chunks), padded

        batches, padded = estimate_batches(lengths, worker_examples, options.stream_window,
                                           count_batches)
        # Real tokens of both sides (as make_batches counts padding: sources and labels, each
        # with its end token) against two arrays of the batches' shapes.
        real = kept * (sum(self.manifest["tokens"]) + 2 * self.manifest["examples"])
        return batches, max(0.0, 1.0 - real / max(2 * padded, 1.0))

    def kept_examples(self, max_length, long_pairs):
        return sum(self.batch_lengths(max_length, long_pairs).values())
