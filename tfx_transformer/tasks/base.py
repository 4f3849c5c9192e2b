"""What `python train.py --task NAME` needs from a task; `training.loop` drives the rest.

A task reads its data and builds its vocabulary (`prepare`), makes batches of int32 arrays whose
last member is the labels (token id 0 = padding, not scored), builds its model and maps a batch's
other members to the model's inputs, adds its own validation metrics and TensorBoard summaries,
scores a test set, and reports at the end. A task with a SavedModel export names its serving
graph (`serving_class`); `tfx_transformer.export` writes it.
"""

import abc
import importlib

from tfx_transformer.config import TransformerConfig
from tfx_transformer.data import BatchShapes, Tokenizer, packing_width
from tfx_transformer.reporting import log


class Task(abc.ABC):
    """One kind of training job. The class attributes are the task's defaults and facts; an
    instance holds one run's data and vocabulary (`self.vocabulary` once prepared)."""

    name = None  # --task NAME (the registry's key)
    packs = False  # whether its training batches can be packed rows (BatchShapes.packed)
    default_data = None  # the data spec of its built-in set
    data_specs = None  # the --data specs it reads, for --help
    # Enough for the built-in set to be learned well by the default preset (a few minutes).
    default_epochs = None
    default_label_smoothing = 0.1
    batch_arity = None  # arrays per batch, labels last
    # Its export's ServingModule by dotted name, imported only by the export (it needs
    # TensorFlow, which training on JAX does not); None: the task has no SavedModel export.
    serving_class = None
    # The validation metric that picks the best weights and --early-stop watches: (name in
    # evaluate's dict, "max" or "min").
    selection_metric = ("loss", "min")
    # What `evaluate` leaves for `report` to show (sample outputs), by attribute name.
    shown_attributes = ()

    def __init__(self, options, paths):
        self.options = options
        self.paths = paths
        self.vocabulary = None
        self.worker, self.workers, self.gather = 0, 1, None
        self.packed_width = None  # packed rows' width, chosen once a run (`run_packed_width`)

    @property
    def streams(self):
        """Whether each worker streams training batches of its own (`train_batches` gives a
        `data.shards.StreamEpoch`) rather than every worker holding the same list."""
        return False

    def place(self, worker, workers, gather=None):
        """This process is worker `worker` of `workers` that train together (a task that streams
        its data reads this worker's share). `gather`: where the workers' streams must agree on
        each step's batch shapes (several JAX processes), the collective they agree with (see
        `data.shards.ShapeAgreement`); None where each worker's batches may differ."""
        self.worker, self.workers, self.gather = worker, workers, gather

    def load_splits(self, load, split_off):
        """(train, validation, test or None) from --data, --valid-data and --test-data.

        `load(spec, split, seed)` reads a spec; a built-in (or tfds) spec has its own validation
        split, a built-in one its test split too; otherwise `split_off(train)` returns
        (train, validation) held out of the training data.
        """
        options = self.options
        kind = options.data.split(":")[0]
        train = load(options.data, "train", options.seed)
        if options.valid_data:
            valid = load(options.valid_data, "validation", options.seed)
        elif kind in ("builtin", "tfds"):
            valid = load(options.data, "validation", options.seed)
        else:
            train, valid = split_off(train)
        test = None
        if options.test_data:
            test = load(options.test_data, "test", options.seed)
        elif kind == "builtin":
            test = load(options.data, "test", options.seed)
        return train, valid, test

    @staticmethod
    def warn_if_mostly_dropped(kept, dropped, unit, max_length):
        """Most of the training set over the length limit: the run would train on the rest."""
        if dropped > kept:
            log(
                f"warning: {dropped} of {kept + dropped} training {unit}s are longer than "
                f"{max_length} tokens and were dropped; raise --max-length, or pass --long-pairs "
                "truncate."
            )

    def model_config(self, vocab_size):
        options = self.options
        return TransformerConfig.preset(
            options.preset, vocab_size=vocab_size, **options.model_overrides()
        )

    @abc.abstractmethod
    def prepare(self):
        """Reads the data and the vocabulary (new, or the saved one on --resume); returns the
        TransformerConfig."""

    @abc.abstractmethod
    def describe_vocabulary(self):
        """One log line: what the vocabulary holds."""

    def save_vocabulary(self):
        """Writes the vocabulary into DIR/tokenizer/."""
        self.vocabulary.save(self.paths.tokenizer)

    @staticmethod
    @abc.abstractmethod
    def load_vocabulary(folder):
        """The vocabulary a run saved in `folder` (DIR/tokenizer/)."""

    @property
    @abc.abstractmethod
    def train_examples(self):
        """How many training examples the batches hold."""

    @abc.abstractmethod
    def train_batches(self, epoch, shapes=BatchShapes()):
        """(list of batches, padding fraction) for epoch `epoch` (0, 1, ...), shuffled by the
        run's --seed plus `epoch`, shaped as `shapes` (a `data.BatchShapes`) says. A task that
        streams its data gives a `data.shards.StreamEpoch` in place of the list."""

    @classmethod
    def model_packing_refusal(cls, model_config):
        """Why this task cannot train a model of `model_config` on packed rows
        (`BatchShapes.packed`), or None where it can."""
        if not cls.packs:
            return (f"the {cls.name} task does not pack; translation and tagging pack their "
                    "examples into rows.")
        refusal = model_config.packing_refusal()
        return refusal and f"{refusal}; train it with --no-packing."

    def packing_refusal(self, model_config):
        """`model_packing_refusal`, and what this run's data allows."""
        return self.model_packing_refusal(model_config)

    def run_packed_width(self, shapes, lengths):
        """With `shapes.packed`: the width of the run's packed rows, chosen by
        `data.packing_width` from `lengths()` (the training examples' lengths, [N, sides]) for
        the task's `max_length` and `d_model` the first time, the same every epoch after (one
        width: one shape). None unpacked."""
        if shapes.packed and self.packed_width is None:
            self.packed_width = packing_width(lengths(), self.max_length, shapes, self.d_model)
        return self.packed_width if shapes.packed else None

    @abc.abstractmethod
    def valid_batches(self, shapes=BatchShapes()):
        """The validation batches, in a fixed order."""

    @abc.abstractmethod
    def build_model(self, model_config):
        """The keras.Model this task trains."""

    @abc.abstractmethod
    def model_inputs(self, features):
        """A batch without its labels -> what the model is called on."""

    @abc.abstractmethod
    def evaluate(self, model, final=False):
        """The task's validation metrics (besides loss and accuracy), as a dict of floats;
        `final`: the end of the run's evaluation, which may be fuller than those in training."""

    def lower_evaluation(self, model, value_of, final=False):
        """On JAX, what `evaluate(model, final)` compiles (with `final`, also `test_metrics`),
        lowered for the weights `value_of(variable)`: a list of `jax.stages.Lowered` whose
        compilation the trainer starts ahead, beside the steps'. Empty by default: it compiles
        when it first runs."""
        return []

    def final_evaluation_cost(self):
        """(validation, test): the time of the final validation and of the test scoring, each in
        units of one in-training evaluation (for --time-budget's reserve)."""
        return 1.0, 1.0

    def write_summaries(self, model, valid_batches, writer, step):
        """TensorBoard text and images of the last evaluation, through `writer` (a
        `training.summaries.SummaryWriter`) at `step`."""

    @abc.abstractmethod
    def describe_metrics(self, metrics):
        """The task's metrics in a few words, for the log."""

    def test_metrics(self, model):
        """Metrics on the test set, prefixed test_; none when there is no test set."""
        return {}

    def data_statistics(self):
        """What the run's results (metrics.json) record of how the data was read and scored."""
        return {}

    def export_settings(self):
        """The run's options that its export takes (see `serving_module`)."""
        return {}

    @classmethod
    def serving_module(cls, model, vocabulary, **settings):
        """The serving graph of `model` (a ServingModule); `settings` as `export_settings`."""
        if cls.serving_class is None:
            raise ValueError(
                f"{type(model).__name__} has no serving export; export a translation or tagging run."
            )
        return cls.load_serving_class()(model, vocabulary, **settings)

    @classmethod
    def load_serving_class(cls):
        """The ServingModule class that `serving_class` names (imports TensorFlow)."""
        module, _, name = cls.serving_class.rpartition(".")
        return getattr(importlib.import_module(module), name)

    @abc.abstractmethod
    def report(self, results):
        """Logs samples; returns the final metrics in a few words for the last log line."""


class SentencePieceTask(Task):
    """A task whose vocabulary is a SentencePiece `Tokenizer` trained on its text."""

    @staticmethod
    def load_vocabulary(folder):
        return Tokenizer.load(folder)

    def tokenizer_for(self, texts):
        """The run's tokenizer: trained on `texts`, or the saved one on --resume."""
        if self.options.resume:
            return Tokenizer.load(self.paths.tokenizer)
        return Tokenizer.train(texts, self.options.vocab_size, seed=self.options.seed)

    def describe_vocabulary(self):
        spelled = ", the rarest characters spelled in bytes" if self.vocabulary.spells_in_bytes else ""
        return f"tokenizer: {self.vocabulary.vocab_size} pieces{spelled}"
