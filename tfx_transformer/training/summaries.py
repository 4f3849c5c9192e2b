"""TensorBoard event files written with tensorboard's own protos and record framing, not
tf.summary, so that a run on the JAX backend writes the same logs without TensorFlow.

The summaries are those tf.summary writes (scalars, text, images and hparams as their plugins
expect them), so TensorBoard and `tf.compat.v1.train.summary_iterator` read them alike.
"""

import itertools
import os
import socket
import struct
import threading
import time
import zlib

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

_FILE_NUMBERS = itertools.count()  # two writers of one folder in one second get two files


class EventFile:
    """An events.out.tfevents.* file: Event protos in TFRecord framing, as TensorFlow's and
    tensorboard's writers lay them out, each written through at once (TensorBoard shows it while
    the run trains). tensorboard's own EventFileWriter reaches the disk through
    `tensorboard.compat.tf`, which imports TensorFlow wherever it is installed (5 s on the
    development machine), for a module a JAX run never uses."""

    def __init__(self, folder):
        folder = str(folder)
        os.makedirs(folder, exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_FILE_NUMBERS)}")
        self._file = open(os.path.join(folder, name), "wb")
        self._records = RecordWriter(self._file)
        self._lock = threading.Lock()
        self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add_event(self, event):
        with self._lock:
            self._records.write(event.SerializeToString())
            self._file.flush()

    def flush(self):
        with self._lock:
            self._file.flush()

    def close(self):
        with self._lock:
            self._file.close()


class SummaryWriter:
    """One folder's event file: `scalar`, `text`, `image`, `histogram` at a step, `hparams`."""

    def __init__(self, folder):
        self._writer = EventFile(folder)

    def _write(self, summary, step):
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def scalar(self, name, value, step):
        self._write(scalar_summary.scalar_pb(name, float(value)), step)

    def text(self, name, markdown, step):
        self._write(text_summary.text_pb(name, markdown), step)

    def histogram(self, name, values, step, buckets=30):
        self._write(histogram_summary.histogram_pb(name, np.asarray(values, "float64"), buckets), step)

    def image(self, name, pixels, step):
        """`pixels`: uint8 [H, W, 3] or [1, H, W, 3] (what `reporting.attention_image` makes)."""
        pixels = np.asarray(pixels, "uint8")
        if pixels.ndim == 4:
            pixels = pixels[0]
        height, width = pixels.shape[:2]
        # The image plugin's own layout: [width, height, PNG...] as a string tensor.
        tensor = tensor_util.make_tensor_proto(
            [str(width).encode(), str(height).encode(), encode_png(pixels)], dtype="string"
        )
        metadata = image_metadata.create_summary_metadata(display_name=name, description="")
        value = summary_pb2.Summary.Value(tag=name, tensor=tensor, metadata=metadata)
        self._write(summary_pb2.Summary(value=[value]), step)

    def hparams(self, values):
        self._write(hparams_summary.hparams_pb(values), 0)

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()


def encode_png(pixels):
    """uint8 [H, W, 3] RGB -> PNG bytes (no imaging library needed)."""
    height, width, channels = pixels.shape
    if channels != 3:
        raise ValueError(f"encode_png takes RGB pixels [H, W, 3]. Received shape {pixels.shape}")
    rows = np.concatenate([np.zeros((height, 1), "uint8"), pixels.reshape(height, -1)], axis=1)

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes())) + chunk(b"IEND", b"")
    )
