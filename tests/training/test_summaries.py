"""TensorBoard event files written without TensorFlow (`training.summaries`) read back, record by
record, with TensorFlow's reader (which checks each record's checksums) and TensorBoard's own."""

import numpy as np
import pytest

from tfx_transformer.training.summaries import SummaryWriter


def test_event_files_read_back_whole_in_tensorflow_and_tensorboard(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    writer = SummaryWriter(tmp_path / "logs")
    again = SummaryWriter(tmp_path / "logs")  # a second writer of the folder: a file of its own
    writer.scalar("loss", 2.5, step=3)
    writer.text("samples", "a *translation*", step=3)
    writer.image("attention", np.full((4, 5, 3), 200, "uint8"), step=4)
    writer.histogram("ponder", [1.0, 2.0, 2.0], step=4)
    writer.hparams({"d_model": 32})
    again.scalar("loss", 9.0, step=1)
    writer.close()
    again.close()

    files = sorted((tmp_path / "logs").glob("events.out.tfevents.*"))
    assert len(files) == 2
    events = [list(tf.compat.v1.train.summary_iterator(str(path))) for path in files]
    mine = max(events, key=len)
    assert mine[0].file_version == "brain.Event:2"
    written = {value.tag: (event.step, value) for event in mine[1:] for value in event.summary.value}
    assert {"loss", "samples", "attention", "ponder"} <= set(written)
    step, loss = written["loss"]
    assert step == 3 and tf.make_ndarray(loss.tensor) == pytest.approx(2.5)
    attention = tf.make_ndarray(written["attention"][1].tensor)
    assert tf.io.decode_png(attention[2]).numpy().tolist() == np.full((4, 5, 3), 200).tolist()
    loaded = [list(EventFileLoader(str(path)).Load()) for path in files]
    assert sorted(map(len, loaded)) == sorted(map(len, events))


def test_an_event_is_on_disk_as_soon_as_it_is_written(tmp_path):
    # TensorBoard shows a run while it trains: nothing waits in a buffer for a flush.
    writer = SummaryWriter(tmp_path)
    (path,) = tmp_path.glob("events.out.tfevents.*")
    size = path.stat().st_size
    writer.scalar("loss", 1.0, step=1)
    assert path.stat().st_size > size
    writer.close()
