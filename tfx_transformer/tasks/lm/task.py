"""`--task lm`: a `TransformerLM` on long text in fixed segments, vanilla or Transformer-XL.

The segment length is the config's `max_length`; `--set memory_length=M` (with relative
positions, e.g. `--set position=transformer_xl`) trains XL mode: each training segment attends to
the layer states of the M tokens before it (rebuilt without gradient from those tokens), and
evaluation carries the memory from segment to segment through the whole text. Validation
perplexity is per segment (vanilla) or with memory (XL); the test text is scored every way that
applies (per segment, sliding window, with memory), each with its time.
"""

from tfx_transformer.data import BatchShapes, DataError
from tfx_transformer.models import TransformerLM
from tfx_transformer.models.lm import check_lm_config
from tfx_transformer.reporting import log
from tfx_transformer.tasks.base import SentencePieceTask
from tfx_transformer.tasks.lm import data as lm_data
from tfx_transformer.tasks.lm import metrics as lm_metrics


class LanguageModelTask(SentencePieceTask):
    name = "lm"
    selection_metric = ("perplexity", "min")
    default_data = "builtin:counting"
    data_specs = "builtin:counting or text:PATH"
    default_epochs = 6
    # A language model is judged by its perplexity, which smoothing would blur.
    default_label_smoothing = 0.0

    def __init__(self, options, paths):
        super().__init__(options, paths)
        settings = self.model_config(vocab_size=1000)  # the vocabulary is not known yet
        check_lm_config(settings)
        self.memory_length = settings.memory_length
        self.batch_arity = 3 if self.memory_length else 2  # ([context,] inputs, labels)
        self._compiled = {}  # the metrics' compiled functions, kept between evaluations

    def prepare(self):
        options = self.options
        train, valid, test = self.load_splits(lm_data.load_spec, lm_data.split_off_tail)
        self.vocabulary = self.tokenizer_for(train.lines)
        model_config = self.model_config(self.vocabulary.vocab_size)
        self.segment_length = model_config.max_length
        # Evaluation cost grows with the text (the sliding window: one pass per token), so the
        # held-out streams are cut to --eval-examples segments.
        limit = options.eval_examples * self.segment_length + 1
        self.train_stream = lm_data.token_stream(self.vocabulary, train)
        self.valid_stream = lm_data.token_stream(self.vocabulary, valid)[:limit]
        self.test_stream = None if test is None else lm_data.token_stream(self.vocabulary, test)[:limit]
        if len(self.train_stream) < 2 or len(self.valid_stream) < 2:
            raise DataError("The training and validation texts need at least two tokens each.")
        log(f"train: {len(self.train_stream)} tokens from {train.origin}")
        log(f"validation: {len(self.valid_stream)} tokens from {valid.origin}")
        if self.test_stream is not None:
            log(f"test: {len(self.test_stream)} tokens from {test.origin}")
        mode = f"Transformer-XL, memory {self.memory_length}" if self.memory_length else "vanilla"
        log(f"segments of {self.segment_length} tokens, {mode}")
        return model_config

    @property
    def train_examples(self):
        return -(-(len(self.train_stream) - 1) // self.segment_length)

    def train_batches(self, epoch, shapes=BatchShapes()):
        return lm_data.segment_batches(
            self.train_stream, self.segment_length, self.memory_length, self.options.batch_tokens,
            self.options.seed + epoch, shapes,
        )

    def valid_batches(self, shapes=BatchShapes()):
        batches, _ = lm_data.segment_batches(
            self.valid_stream, self.segment_length, self.memory_length, self.options.batch_tokens,
            shapes=shapes,
        )
        return batches

    def build_model(self, model_config):
        return TransformerLM(model_config)

    def model_inputs(self, features):
        if self.memory_length:
            context, inputs = features
            return {"context_ids": context, "token_ids": inputs}
        return features[0]

    def _procedure(self):
        return "with_memory" if self.memory_length else "per_segment"

    def evaluate(self, model, final=False):
        result = lm_metrics.PROCEDURES[self._procedure()](model, self.valid_stream, compiled=self._compiled)
        return {"perplexity": result["perplexity"]}

    def lower_evaluation(self, model, value_of, final=False):
        # Per segment only: with a memory, the memory a segment passes on is placed as the
        # step's output, not as the first segment's empty one (what to lower is not known
        # before a call); the sliding window of the test set compiles when it comes.
        streams = [self.valid_stream] if self._procedure() == "per_segment" else []
        if final and self.test_stream is not None:
            streams.append(self.test_stream)
        return [lowered for stream in streams
                for lowered in lm_metrics.lower_per_segment(model, stream, value_of, self._compiled)]

    def describe_metrics(self, metrics):
        return f"perplexity {metrics['perplexity']:.3f} ({self._procedure().replace('_', ' ')})"

    def test_metrics(self, model):
        if self.test_stream is None:
            return {}
        names = ["per_segment", "sliding_window"] + (["with_memory"] if self.memory_length else [])
        results = {"test_tokens": len(self.test_stream) - 1}
        for name in names:
            result = lm_metrics.PROCEDURES[name](model, self.test_stream, compiled=self._compiled)
            results[f"test_perplexity_{name}"] = result["perplexity"]
            results[f"test_seconds_{name}"] = result["seconds"]
            log(f"test perplexity {name.replace('_', ' ')}: {result['perplexity']:.3f} "
                f"({result['seconds']:.1f} s)")
        return results

    def report(self, results):
        return self.describe_metrics(results)
