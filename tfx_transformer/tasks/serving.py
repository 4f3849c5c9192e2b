"""What the tasks' serving graphs share. A task with a SavedModel export defines a `ServingModule`:
`serve` (a tf.function from `text`: tf.string [None] to the task's outputs), the `model` and the
`text_layer` that turns text into ids (the export tracks both), and `info` (the settings it was
built with, written beside the graph at `info_path`).
"""

import os

import tensorflow as tf

from tfx_transformer.compiling import tf_function

INFO_FOLDER = "assets.extra"  # TF Serving ignores it, except for warm-up requests
WARMUP_TEXTS = (
    ["warm up"],
    ["a longer sentence , so that the first requests after a load find the decoder ready", "one"],
)


def repair_utf8(text):
    """Invalid UTF-8 becomes U+FFFD instead of failing the whole batch."""
    return tf.strings.unicode_transcode(
        text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )


class ServingModule(tf.Module):
    """Base of the serving graphs: `serve` takes `text` [None] and calls `_serve`."""

    info_path = None  # where `info` is written, inside the export's version folder

    def __init__(self, model, name):
        super().__init__(name=name)
        self.model = model
        self.serve = tf_function(
            self._serve, input_signature=[tf.TensorSpec([None], tf.string, name="text")]
        )

    @property
    def text_layer(self):
        """The layer that turns text into ids, exported beside the model."""
        raise NotImplementedError

    def signatures(self):
        """{signature name: tf.function} for the SavedModel; `serving_default` first."""
        return {"serving_default": self.serve}

    def warmup_requests(self):
        """[(signature, {input: strings})] that TF Serving replays before serving: a short and a
        longer batch for each signature."""
        return [("serving_default", {"text": texts}) for texts in WARMUP_TEXTS]

    def _serve(self, text):
        raise NotImplementedError


def info_path(task_name):
    return os.path.join(INFO_FOLDER, f"{task_name}.json")
