"""`TransformerConfig`: every hyperparameter of the model, one typed object that round-trips JSON."""

import dataclasses
import json

from tfx_transformer.layers.attention import SCORE_FUNCTIONS
from tfx_transformer.layers.relative import RELATIVE_ATTENTION
from tfx_transformer.layers.universal import check_halting
from tfx_transformer.layers.validation import check_choice, check_positive_int, check_rate
from tfx_transformer.tokens import END_ID, PAD_ID, START_ID

# Absolute positions are added to the embeddings; relative ones live in the self-attention.
POSITION_KINDS = ("sinusoidal", "learned") + RELATIVE_ATTENTION

# The paper's Table 3 rows for base and big; tiny and small are sized for a CPU: small for a
# corpus of some 10^4-10^5 real sentence pairs in minutes (2 + 2 layers trained 1.4x the steps of
# 3 + 3 in the same time and did better, README "Real text").
PRESETS = {
    "tiny": dict(
        d_model=64, num_heads=4, d_ff=256, num_encoder_layers=2, num_decoder_layers=2,
        dropout=0.1, max_length=64,
    ),
    "small": dict(
        d_model=256, num_heads=4, d_ff=1024, num_encoder_layers=2, num_decoder_layers=2,
        dropout=0.1, max_length=128,
    ),
    "base": dict(
        d_model=512, num_heads=8, d_ff=2048, num_encoder_layers=6, num_decoder_layers=6,
        dropout=0.1, max_length=256,
    ),
    "big": dict(
        d_model=1024, num_heads=16, d_ff=4096, num_encoder_layers=6, num_decoder_layers=6,
        dropout=0.3, max_length=256,
    ),
}


class JsonDataclass:
    """to_dict/from_dict and JSON for a dataclass; unknown fields are refused by name."""

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} fields: {unknown}")
        return cls(**values)

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))


@dataclasses.dataclass
class TransformerConfig(JsonDataclass):
    """Hyperparameters of the package's models; the defaults are the paper's base Transformer.

    `position`: "sinusoidal" or "learned" absolute positions added to the embeddings, or
    relative positions inside every self-attention: "shaw" (learned embeddings of the distance
    clipped to `max_relative_distance`, in the keys and, with `relative_values`, the values),
    "tener" (TENER's direction-aware sinusoidal encoding, un-scaled scores) or "transformer_xl"
    (Transformer-XL's encoding of the distance, projected per head, with u and v biases).

    `memory_length` (TransformerLM only): Transformer-XL's memory, the number of earlier
    positions whose layer inputs each segment attends to; it needs relative positions.

    `linformer_length` (k) projects the encoder self-attention's keys and values along the
    sequence to k rows (Linformer); the decoder's causal self-attention stays full.

    `universal_steps` > 0 makes the encoder and the decoder Universal Transformer stacks: one
    block each, with shared weights, applied `universal_steps` times with a timestep signal added
    before every application (`num_encoder_layers` and `num_decoder_layers` are then unused).
    `adaptive_computation` adds ACT: each position stops after at most `universal_steps`
    applications, once its halting probabilities sum past `halting_threshold` (1 - epsilon),
    and `ponder_cost` (tau) times its steps plus remainder is added to the training loss. See
    `tfx_transformer.layers.universal`.

    Token ids: `pad_id` (0, masked everywhere), `start_id` (fed first to the decoder) and
    `end_id` (ends a decoded sequence).
    """

    vocab_size: int = 37000
    d_model: int = 512
    num_heads: int = 8
    d_ff: int = 2048
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dropout: float = 0.1
    attention_dropout: float | None = None  # None: same as dropout
    ffn_dropout: float | None = None  # after the feed-forward activation; None: same as dropout
    max_length: int = 256
    share_embeddings: bool = True
    position: str = "sinusoidal"
    norm_first: bool = False
    activation: str = "relu"
    score: str = "scaled_dot"
    layer_norm_epsilon: float = 1e-6
    max_relative_distance: int = 16
    relative_values: bool = True
    linformer_length: int | None = None  # k: Linformer encoder self-attention; None: full
    linformer_share_projection: bool = False
    memory_length: int = 0  # TransformerLM: Transformer-XL memory (earlier positions kept per layer)
    universal_steps: int = 0  # > 0: Universal Transformer stacks, one shared block applied this often
    adaptive_computation: bool = False  # ACT over the universal steps (needs universal_steps)
    halting_threshold: float = 0.99  # ACT: 1 - epsilon
    ponder_cost: float = 0.01  # ACT: tau, the weight of the ponder cost in the loss
    pad_id: int = PAD_ID
    start_id: int = START_ID
    end_id: int = END_ID

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "num_heads", "d_ff", "num_encoder_layers",
                     "num_decoder_layers", "max_length", "max_relative_distance"):
            check_positive_int(name, getattr(self, name))
        if self.d_model % self.num_heads:
            raise ValueError(
                "`d_model` must be divisible by `num_heads`. Received: "
                f"d_model={self.d_model}, num_heads={self.num_heads}"
            )
        check_rate("dropout", self.dropout)
        for name in ("attention_dropout", "ffn_dropout"):
            if getattr(self, name) is not None:
                check_rate(name, getattr(self, name))
        check_choice("position", self.position, POSITION_KINDS)
        check_choice("score", self.score, SCORE_FUNCTIONS)
        if not isinstance(self.memory_length, int) or self.memory_length < 0:
            raise ValueError(
                f"`memory_length` must be a non-negative integer. Received: {self.memory_length!r}"
            )
        if self.linformer_length is not None:
            check_positive_int("linformer_length", self.linformer_length)
            if self.is_relative:
                raise ValueError(
                    "Linformer attention takes absolute positions (sinusoidal or learned). "
                    f"Received: position={self.position!r}"
                )
            if self.score not in ("scaled_dot", "dot"):
                raise ValueError(f"Linformer attention takes a dot score. Received: score={self.score!r}")
        if not isinstance(self.universal_steps, int) or isinstance(self.universal_steps, bool) or (
            self.universal_steps < 0
        ):
            raise ValueError(
                "`universal_steps` must be a non-negative integer (0: fixed-depth stacks). "
                f"Received: {self.universal_steps!r}"
            )
        if not isinstance(self.adaptive_computation, bool):
            raise ValueError(
                f"`adaptive_computation` must be True or False. Received: {self.adaptive_computation!r}"
            )
        if self.adaptive_computation and not self.universal_steps:
            raise ValueError(
                "Adaptive computation time decides how many of the universal steps each position "
                "takes; set `universal_steps` (the most it may take) too."
            )
        check_halting(self.halting_threshold, self.ponder_cost)
        if self.universal_steps and self.memory_length:
            raise ValueError(
                "A Transformer-XL memory keeps each layer's inputs; a universal stack has one "
                "block applied repeatedly. Use `memory_length=0` with `universal_steps`."
            )
        for name in ("pad_id", "start_id", "end_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"`{name}` must be a token id in [0, vocab_size={self.vocab_size}). "
                    f"Received: {name}={value!r}"
                )
        if self.pad_id != PAD_ID:
            raise ValueError(f"Token id {PAD_ID} is padding everywhere. Received: pad_id={self.pad_id}")

    @classmethod
    def preset(cls, name, **overrides):
        """A named preset (tiny, small, base, big) with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        return cls.from_dict({**PRESETS[name], **overrides})

    def block_kwargs(self):
        """The arguments that every encoder and decoder block takes."""
        return dict(
            d_model=self.d_model,
            num_heads=self.num_heads,
            d_ff=self.d_ff,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            ffn_dropout=self.ffn_dropout,
            norm_first=self.norm_first,
            activation=self.activation,
            score=self.score,
            layer_norm_epsilon=self.layer_norm_epsilon,
            relative_attention=self.position if self.is_relative else None,
            max_relative_distance=self.max_relative_distance,
            relative_values=self.relative_values,
            linformer_length=self.linformer_length,
            linformer_max_length=self.max_length if self.linformer_length else None,
            linformer_share_projection=self.linformer_share_projection,
        )

    def stack_kwargs(self, num_layers):
        """The arguments of an encoder or decoder stack: `num_layers` blocks, or the universal
        stack's recurrence."""
        if not self.universal_steps:
            return dict(num_layers=num_layers, **self.block_kwargs())
        return dict(
            max_steps=self.universal_steps,
            adaptive_computation=self.adaptive_computation,
            halting_threshold=self.halting_threshold,
            ponder_cost=self.ponder_cost,
            **self.block_kwargs(),
        )

    def packing_refusal(self):
        """Why a model of this config cannot take packed rows (several examples one after
        another in a row, told apart by segment ids), or None where it can."""
        if self.linformer_length is not None:
            return ("Linformer attention projects a whole row's keys together, which would mix "
                    "packed examples")
        return None

    @property
    def is_relative(self):
        """True when positions live in the self-attention rather than in the embeddings."""
        return self.position in RELATIVE_ATTENTION
