"""`compile_for_backend`: a function of int32 id arrays compiled by the running backend's own
compiler, reading the model's weights as they are at each call."""

import keras


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
        import tensorflow as tf  # the backend's compiler; this module itself needs neither

        if inputs is None:
            return tf.function(function)
        return tf.function(function, input_signature=[tf.TensorSpec([None, None], tf.int32)] * inputs)
    if backend != "jax":
        return function
    import jax

    if model is None:
        return jax.jit(function)
    return WeightsAsArguments(function, model)


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

    def __call__(self, *args):
        return self._jitted([variable.value for variable in self._variables], *args)

    def lower(self, value_of, *args):
        """The lowered computation for the variables holding `value_of(variable)` (arrays of the
        shapes, types and placement they will have) and `args`; its `.compile()` is what a call
        with them finds, compiled."""
        return self._jitted.lower([value_of(variable) for variable in self._variables], *args)
