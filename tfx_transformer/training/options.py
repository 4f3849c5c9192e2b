"""`TrainOptions`: every option of a training run, checked when made; saved in DIR/config.json
and accepted by --config."""

import dataclasses
import math

from tfx_transformer.config import PRESETS, JsonDataclass, TransformerConfig
from tfx_transformer.tasks import task_class
from tfx_transformer.tasks.translation.metrics import BLEU_TOKENIZE_CHOICES

# auto: MultiWorkerMirrored with TF_CONFIG (JAX: every process keras.distribution.initialize
# joined), every local device when there are several, else one; default: one device; mirrored:
# every local device; multiworker: every process.
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
# What suits each preset when a flag does not say: batch size and the learning rate's scale (the
# paper's schedule, d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), times this). small's are
# what the measurements on real text showed (README, "Real text"): at d_model 256 the paper's
# rate is too high for post-LN layers, and in a fixed time smaller batches (more updates) win.
PRESET_TRAINING = {
    "tiny": dict(batch_tokens=3072, learning_rate_scale=1.0),
    "small": dict(batch_tokens=1536, learning_rate_scale=0.5),
    "base": dict(batch_tokens=3072, learning_rate_scale=1.0),
    "big": dict(batch_tokens=3072, learning_rate_scale=1.0),
}
UNBOUNDED_EPOCHS = 100_000
# A run of the task's default epochs trains for at least this many times --warmup-steps, so that
# at most half of it is spent warming up: on a small corpus the default epochs are few steps
# (Multi30k's first 3,000 pairs, tiny preset: 6 epochs are 150 steps, inside the 400 of warm-up,
# and reached validation BLEU 1.3, where 2,000 steps reached 25.3).
MIN_DEFAULT_STEPS_PER_WARMUP = 2
# Without --eval-every a run evaluates at the end of every epoch, or of every few where an epoch
# is shorter than this: on that corpus an evaluation (500 pairs decoded, ~2.6 s) came every 25
# steps (~4.4 s) and took 85 s of a 244-s job.
MIN_STEPS_BETWEEN_EVALUATIONS = 100
# auto: bf16 where it runs natively (a GPU or TPU; on TensorFlow, a CPU with AVX512-BF16 or AMX).
MIXED_PRECISION = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16", "auto": None}


@dataclasses.dataclass
class TrainOptions(JsonDataclass):
    """Every option of a training run; saved in DIR/config.json and accepted by --config."""

    output: str = "runs/default"
    task: str = "translation"
    preset: str = "tiny"
    data: str | None = None  # None: the task's built-in set
    valid_data: str | None = None
    test_data: str | None = None
    epochs: int | None = None  # None: the task's default (`planned_epochs`)
    steps: int | None = None
    batch_tokens: int | None = None  # None: the preset's (PRESET_TRAINING)
    max_length: int | None = None
    long_pairs: str = "drop"
    packing: bool | None = None  # translation, tagging: examples packed into rows; None: on JAX, off on TF
    stream_window: int = 100_000  # --data prepared:DIR: examples shuffled and batched together
    vocab_size: int = 8000  # translation: SentencePiece bound; tagging: most frequent words kept
    model: dict = dataclasses.field(default_factory=dict)  # TransformerConfig overrides
    warmup_steps: int = 400
    learning_rate_scale: float | None = None  # None: the preset's (PRESET_TRAINING)
    label_smoothing: float | None = None  # None: the task's default
    clipnorm: float | None = None
    strategy: str = "auto"
    cpu_devices: int = 0
    mixed_precision: str = "auto"
    jit_compile: bool = False
    seed: int = 0
    eval_every: int = 0  # steps between evaluations; 0: `evaluation_interval`
    eval_examples: int = 500  # decoded greedily during training; the end decodes all of them
    time_budget: float | None = None  # seconds for the whole job; None: no limit
    early_stop: int = 0  # evaluations without improvement that end training; 0: never
    average_last: int = 5  # checkpoints averaged at the end; 0 or 1: none
    allow_misaligned: bool = False  # train on parallel text that looks misaligned
    beam_size: int = 4
    length_penalty: float = 0.6
    bleu_tokenize: str = "auto"  # translation: sacrebleu's tokenizer for BLEU; auto: by the script
    checkpoint_every: int = 200
    log_every: int = 25
    samples: int = 5
    word_dropout: float = 0.1  # tagging: share of training words replaced by <unk>
    export: bool = True
    compile_ahead: bool = True  # JAX: the steps' and evaluations' shapes compiled side by side first
    resume: bool = False

    def __post_init__(self):
        check_types(self)
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}. Received: {self.preset!r}")
        for name, value in PRESET_TRAINING[self.preset].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        task = task_class(self.task)
        if self.data is None:
            self.data = task.default_data
        if self.epochs is None and (self.time_budget or self.steps):
            # With a time budget or --steps and no --epochs, they alone end training.
            self.epochs = UNBOUNDED_EPOCHS
        if self.label_smoothing is None:
            self.label_smoothing = task.default_label_smoothing
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1). Received: {self.label_smoothing!r}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"--word-dropout must be in [0, 1). Received: {self.word_dropout!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"--mixed-precision must be one of {sorted(MIXED_PRECISION)}. "
                f"Received: {self.mixed_precision!r}"
            )
        for name in ("epochs", "steps", "batch_tokens", "vocab_size", "warmup_steps", "beam_size",
                     "checkpoint_every", "log_every", "eval_examples", "stream_window"):
            value = getattr(self, name)
            if value is None and name in ("epochs", "steps"):
                continue
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer. Received: {value!r}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(
                f"--time-budget must be a positive number of seconds. Received: {self.time_budget!r}"
            )
        if not self.learning_rate_scale > 0:
            raise ValueError(
                f"--learning-rate-scale must be positive. Received: {self.learning_rate_scale!r}"
            )
        for name in ("early_stop", "average_last"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be 0 or more. Received: {value!r}")
        if self.bleu_tokenize not in BLEU_TOKENIZE_CHOICES:
            raise ValueError(
                f"--bleu-tokenize must be one of {BLEU_TOKENIZE_CHOICES}. "
                f"Received: {self.bleu_tokenize!r}"
            )
        if self.long_pairs not in ("drop", "truncate"):
            raise ValueError(f"--long-pairs must be drop or truncate. Received: {self.long_pairs!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"--strategy must be one of {STRATEGIES}. Received: {self.strategy!r}"
            )
        if "vocab_size" in self.model:
            raise ValueError(
                "The vocabulary size comes from the tokenizer trained on the data; bound it with "
                "--vocab-size instead of --set vocab_size."
            )
        model = TransformerConfig.preset(self.preset, **self.model_overrides())  # fails early
        refusal = task.model_packing_refusal(model) if self.packing else None
        if refusal:
            raise ValueError(f"--packing: {refusal}")

    def planned_epochs(self, steps_per_epoch):
        """--epochs, or where it is not given the task's default, raised on a small corpus to
        make MIN_DEFAULT_STEPS_PER_WARMUP times --warmup-steps."""
        if self.epochs is not None:
            return self.epochs
        enough = math.ceil(MIN_DEFAULT_STEPS_PER_WARMUP * self.warmup_steps / steps_per_epoch)
        return max(task_class(self.task).default_epochs, enough)

    def evaluation_interval(self, steps_per_epoch):
        """Steps between evaluations: --eval-every, or the fewest whole epochs that make
        MIN_STEPS_BETWEEN_EVALUATIONS."""
        if self.eval_every:
            return self.eval_every
        return steps_per_epoch * math.ceil(MIN_STEPS_BETWEEN_EVALUATIONS / steps_per_epoch)

    def model_overrides(self):
        overrides = dict(self.model)
        if self.max_length is not None:
            overrides["max_length"] = self.max_length
        return overrides


def check_types(options):
    """Each option has its field's type (a --config file can hold anything JSON can)."""
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        kinds = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,)}
        spelled = field.type.__name__ if isinstance(field.type, type) else str(field.type)
        names = [part.strip() for part in spelled.split("|")]
        allowed = tuple(k for name in names for k in kinds.get(name, ()))
        optional = "None" in names
        if value is None and optional:
            continue
        wrong_bool = isinstance(value, bool) and bool not in allowed
        if not isinstance(value, allowed) or wrong_bool:
            raise ValueError(
                f"--{field.name.replace('_', '-')} must be {' or '.join(names)}. Received: {value!r}"
            )
