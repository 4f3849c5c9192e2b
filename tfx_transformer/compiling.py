"""`compile_for_backend`: a function of int32 id arrays compiled by the running backend's own
compiler, reading the model's weights as they are at each call."""

import keras
import numpy as np

from tfx_transformer.data import pad_rows

# On JAX, id arrays given to a compiled function have widths rounded up to this (and rows to a
# power of two), so that jax.jit compiles a bounded number of times.
JAX_WIDTH_MULTIPLE = 16


def tf_function(function, **options):
    """tf.function without AutoGraph. This package's traced code has no Python control flow over
    tensors (it runs under jax.jit as well, which has no such conversion), and AutoGraph's
    rewriting of every function a trace calls, in every process, was ~5.5 s of a 37-s tiny
    training run with its export (README, "Training")."""
    import tensorflow as tf  # the backend's compiler; this module itself needs neither

    return tf.function(function, autograph=False, **options)


def compile_for_backend(function, inputs=1, model=None):
    """tf.function over `inputs` [None, None] int32 arrays on TensorFlow (one trace; with
    `inputs=None`, a trace per input structure and shape), jax.jit on JAX, the function itself
    elsewhere.

    On JAX, weights read inside a traced function would be frozen into the compiled code as
    constants: with `model` given they are passed in as arguments instead, so that one
    compilation serves weights that change between calls (evaluation during training).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if inputs is None:
            return tf_function(function)
        return tf_function(function, input_signature=[tf.TensorSpec([None, None], tf.int32)] * inputs)
    if backend != "jax":
        return function
    import jax

    if model is None:
        return jax.jit(function)
    return WeightsAsArguments(function, model)


def pad_batch(rows, batch_size, max_width=None):
    """Lists of ids (at most `batch_size`) -> int32 [rows, width], 0-padded on the right: as
    they are on TensorFlow, a bounded set of shapes on JAX: rows up to a power of two (at most
    `batch_size`, so that a few inputs are not decoded as a whole batch of empty rows), widths up
    to a multiple of `JAX_WIDTH_MULTIPLE` but not past `max_width` (the model's max_length: a
    learned position table has no row beyond it) where the rows fit it."""
    if keras.backend.backend() != "jax":
        return pad_rows(rows)
    count = min(batch_size, 1 << max(len(rows) - 1, 0).bit_length())
    longest = max(len(row) for row in rows)
    width = -(-longest // JAX_WIDTH_MULTIPLE) * JAX_WIDTH_MULTIPLE
    if max_width is not None and width > max_width:
        width = max(max_width, longest)
    return pad_rows(rows, shape=(count, width))


class WeightsAsArguments:
    """`function` under jax.jit with `model`'s weights passed in as its first argument; called
    as `function` is. `lower` traces it for weights that are not yet the variables' own (the
    training state, during training), so that its compilation can start before it is called."""

    def __init__(self, function, model):
        import jax

        self._variables = variables = list(model.variables)

        def with_weights(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return function(*args)

        self._jitted = jax.jit(with_weights)
        self._lowered = set()  # the input shapes `lower_new` gave

    def __call__(self, *args):
        return self._jitted([variable.value for variable in self._variables], *args)

    def lower(self, value_of, *args):
        """The lowered computation for the variables holding `value_of(variable)` (arrays of the
        shapes, types and placement they will have) and `args`; its `.compile()` is what a call
        with them finds, compiled."""
        return self._jitted.lower([value_of(variable) for variable in self._variables], *args)

    def lower_new(self, value_of, shapes, inputs=1):
        """`lower` for a function of `inputs` int32 arrays of one shape, for each of `shapes`
        not lowered before (a compilation each, however often asked), in their order."""
        new = [shape for shape in dict.fromkeys(shapes) if shape not in self._lowered]
        self._lowered.update(new)
        return [self.lower(value_of, *[np.zeros(shape, "int32")] * inputs) for shape in new]


def reused(compiled, key, make):
    """`make()`'s compiled function, kept in `compiled` (a dict its caller holds for one model)
    under `key` and reused: jax.jit compiles every new function object anew, so one made for
    each evaluation would compile at each evaluation. `compiled` None: a new one."""
    if compiled is None:
        return make()
    if key not in compiled:
        compiled[key] = make()
    return compiled[key]
