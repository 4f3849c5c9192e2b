"""The Universal Transformer's stacks (Dehghani et al. 2018): one block applied again and again
with shared weights, a timestep signal added before every application, and optionally Adaptive
Computation Time (Graves 2016) deciding per position how many applications it gets.

What the fixed-depth stacks lack and this adds: recurrence in depth (the same function applied
repeatedly, Tran et al.'s inductive bias for hierarchical structure), a number of sequential
steps that is a hyperparameter rather than a count of weight matrices (parameters do not grow
with `max_steps`), and, with ACT, conditional computation: each position halts on its own.

ACT, per position n, with halting probabilities p_t = sigmoid(w . s_t + b) of its states s_t:
it runs while the sum of its p_t stays at or below `halting_threshold` (1 - epsilon); at the step
N where the sum would pass it (or at `max_steps`, where every position halts) it takes the
remainder R = 1 - sum_{t<N} p_t as its last weight. Its output is the weighted sum of its
states, sum_{t<N} p_t s_t + R s_N (weights summing to exactly 1); once halted its state is
frozen at that output ("simply copied to the next step", the paper's section 2.2) for the
positions still running to attend to. The ponder cost tau * mean(N + R) over real positions is
added to the training loss (`add_loss`); padded positions start halted and never count.

Unlike tensor2tensor, whose output interpolates each step's state with the previous output,
this is Graves's weighted sum: the weights are the halting distribution itself.
"""

import keras
from keras import ops

from tfx_transformer.layers.cache import empty_block_caches
from tfx_transformer.layers.decoder import DecoderBlock
from tfx_transformer.layers.encoder import EncoderBlock
from tfx_transformer.layers.position import sinusoid
from tfx_transformer.layers.validation import check_positive_int


def check_halting(halting_threshold, ponder_cost):
    if isinstance(halting_threshold, bool) or not isinstance(halting_threshold, (int, float)) or not (
        0.0 < halting_threshold <= 1.0
    ):
        raise ValueError(
            f"`halting_threshold` must be a number in (0, 1]. Received: {halting_threshold!r}"
        )
    if isinstance(ponder_cost, bool) or not isinstance(ponder_cost, (int, float)) or ponder_cost < 0:
        raise ValueError(f"`ponder_cost` must be a non-negative number. Received: {ponder_cost!r}")


class UniversalStackBase(keras.layers.Layer):
    """One shared block of `block_class` applied `max_steps` times (see the module docstring).

    With `adaptive_computation`, the ponder statistics of a call are returned when asked
    (`return_ponder=True`): {"steps": N [B, T], "remainders": R [B, T]}, float32, zero on
    padded positions.
    """

    block_class = None

    def __init__(
        self,
        max_steps,
        adaptive_computation=False,
        halting_threshold=0.99,
        ponder_cost=0.01,
        **block_kwargs,
    ):
        layer_kwargs = {
            key: block_kwargs.pop(key)
            for key in ("name", "dtype", "trainable", "autocast")
            if key in block_kwargs
        }
        super().__init__(**layer_kwargs)
        check_positive_int("max_steps", max_steps)
        check_halting(halting_threshold, ponder_cost)
        self.max_steps = max_steps
        self.adaptive_computation = bool(adaptive_computation)
        self.halting_threshold = float(halting_threshold)
        self.ponder_cost = float(ponder_cost)
        self.block_kwargs = block_kwargs
        self.block = self.block_class(**block_kwargs, dtype=self.dtype_policy, name="block")
        self.norm_first = block_kwargs.get("norm_first", False)
        # Pre-LN blocks leave their output unnormalized, as in the fixed-depth stacks.
        self.final_norm = self.block._norm_layer("final_norm") if self.norm_first else None
        self.halting_unit = None
        if self.adaptive_computation:
            # float32: the halting sums are compared with a threshold near 1, which bfloat16's
            # 8-bit mantissa cannot resolve. Bias 1 (tensor2tensor's choice): p starts near 0.73,
            # so a position first halts after a couple of steps rather than at the first.
            self.halting_unit = keras.layers.Dense(
                1,
                activation="sigmoid",
                bias_initializer=keras.initializers.Constant(1.0),
                dtype="float32",
                name="halting_unit",
            )

    def _build_common(self, x_shape):
        if self.final_norm is not None:
            self.final_norm.build(x_shape)
        if self.halting_unit is not None:
            self.halting_unit.build(x_shape)

    def timestep_signal(self, step):
        """[d_model]: the sinusoid of the step number, in the compute dtype."""
        return sinusoid(step, self.block_kwargs["d_model"], dtype=self.compute_dtype)

    def _recur(self, x, apply_block, padding_mask, training):
        """Runs `apply_block(state, step) -> (new state, extras)` for the steps; returns
        (output, [extras per step], ponder dict or None)."""
        extras = []
        if not self.adaptive_computation:
            for step in range(self.max_steps):
                x, extra = apply_block(x + self.timestep_signal(step), step)
                extras.append(extra)
            return self._finish(x), extras, None

        batch_shape = ops.shape(x)[:2]
        real = (
            ops.ones(batch_shape, "float32")
            if padding_mask is None
            else ops.cast(padding_mask, "float32")
        )
        halting = 1.0 - real  # padded positions start halted
        remainders = ops.zeros(batch_shape, "float32")
        steps = ops.zeros(batch_shape, "float32")
        output = ops.zeros(ops.shape(x), "float32")
        state = x
        for step in range(self.max_steps):
            state = state + self.timestep_signal(step)
            probability = ops.squeeze(self.halting_unit(ops.cast(state, "float32")), -1)
            running = ops.cast(ops.less(halting, 1.0), "float32")
            if step == self.max_steps - 1:  # the last step: every position still running halts
                halts_now, continues = running, ops.zeros_like(running)
            else:
                reached = halting + probability * running
                halts_now = ops.cast(ops.greater(reached, self.halting_threshold), "float32") * running
                continues = running - halts_now
            halting = halting + probability * continues
            remainder = halts_now * (1.0 - halting)
            remainders = remainders + remainder
            halting = halting + remainder
            steps = steps + running
            weight = probability * continues + remainder  # (B, T)
            transformed, extra = apply_block(state, step)
            extras.append(extra)
            output = output + ops.expand_dims(weight, -1) * ops.cast(transformed, "float32")
            # Halted positions keep their output as their state for the others to attend to.
            state = ops.where(
                ops.expand_dims(continues > 0, -1),
                transformed,
                ops.cast(output, transformed.dtype),
            )
        if training and self.ponder_cost:
            ponder = ops.sum((steps + remainders) * real) / ops.maximum(ops.sum(real), 1.0)
            self.add_loss(self.ponder_cost * ponder)
        output = self._finish(ops.cast(output, x.dtype))
        return output, extras, {"steps": steps, "remainders": remainders}

    def _finish(self, x):
        return x if self.final_norm is None else self.final_norm(x)

    def compute_output_shape(self, x_shape, *args, **kwargs):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_steps": self.max_steps,
                "adaptive_computation": self.adaptive_computation,
                "halting_threshold": self.halting_threshold,
                "ponder_cost": self.ponder_cost,
                **self.block_kwargs,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfx_transformer")
class UniversalEncoder(UniversalStackBase):
    """The shared EncoderBlock over embedded inputs [B, S, d_model], up to `max_steps` times.

    Call arguments: `attention_mask` as for `Encoder`; `padding_mask` [B, S] bool, True on real
    positions (ACT: padded ones never ponder; None: all real). Returns x [B, S, d_model]; with
    `return_attention_scores` also the list of the self-attention weights of each step; with
    `return_ponder` also the ponder statistics (None without ACT).
    """

    block_class = EncoderBlock

    def build(self, x_shape):
        self.block.build(x_shape)
        self._build_common(x_shape)
        self.built = True

    def call(
        self,
        x,
        attention_mask=None,
        padding_mask=None,
        return_attention_scores=False,
        return_ponder=False,
        training=None,
    ):
        def apply_block(state, step):
            result = self.block(
                state,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
                training=training,
            )
            return result if return_attention_scores else (result, None)

        x, weights, ponder = self._recur(x, apply_block, padding_mask, training)
        outputs = (x,)
        if return_attention_scores:
            outputs += (weights,)
        if return_ponder:
            outputs += (ponder,)
        return outputs[0] if len(outputs) == 1 else outputs


@keras.saving.register_keras_serializable(package="tfx_transformer")
class UniversalDecoder(UniversalStackBase):
    """The shared DecoderBlock over embedded targets [B, T, d_model], up to `max_steps` times.

    The arguments and caches are those of `Decoder`, with one self-attention (keys, values) pair
    per step (each step attends to the earlier positions' states at that step) and a single
    cross-attention pair: the shared block projects the encoder output the same way at every
    step, so it is projected once per source. `padding_mask` and `return_ponder` are those of
    `UniversalEncoder`; while decoding one position at a time every position is real.

    Returns x, then the self and cross weights per step when asked, then the ponder statistics
    when asked, then the updated self-attention cache when one was passed.
    """

    block_class = DecoderBlock

    def build(self, x_shape, encoder_output_shape=None):
        self.block.build(x_shape, encoder_output_shape)
        self._build_common(x_shape)
        self.built = True

    def project_cross_attention_cache(self, encoder_output):
        """[B, S, d_model] -> a one-pair tuple: the keys and values every step attends to."""
        return (self.block.cross_attention.project_key_value(encoder_output),)

    def empty_self_attention_cache(self, batch_size, max_length):
        """One (keys, values) pair of zeros [B, h, L, d_head] per step, filled while decoding."""
        return empty_block_caches(
            self.max_steps, self.block_kwargs, batch_size, max_length, self.compute_dtype
        )

    def call(
        self,
        x,
        encoder_output=None,
        self_attention_mask=None,
        cross_attention_mask=None,
        self_attention_cache=None,
        cache_update_index=None,
        cross_attention_cache=None,
        padding_mask=None,
        return_attention_scores=False,
        return_ponder=False,
        training=None,
    ):
        new_caches = []

        def apply_block(state, step):
            outputs = self.block(
                state,
                encoder_output,
                self_attention_mask=self_attention_mask,
                cross_attention_mask=cross_attention_mask,
                self_attention_cache=(
                    None if self_attention_cache is None else self_attention_cache[step]
                ),
                cache_update_index=cache_update_index,
                cross_attention_cache=(
                    None if cross_attention_cache is None else cross_attention_cache[0]
                ),
                return_attention_scores=return_attention_scores,
                training=training,
            )
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            if self_attention_cache is not None:
                new_caches.append(outputs[-1])
            return outputs[0], outputs[1:3] if return_attention_scores else None

        x, weights, ponder = self._recur(x, apply_block, padding_mask, training)
        outputs = (x,)
        if return_attention_scores:
            outputs += ([w[0] for w in weights], [w[1] for w in weights])
        if return_ponder:
            outputs += (ponder,)
        if self_attention_cache is not None:
            outputs += (tuple(new_caches),)
        return outputs[0] if len(outputs) == 1 else outputs
