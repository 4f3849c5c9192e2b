"""`python -m tfx_transformer.prepare` and `--data prepared:DIR`: the shards hold the corpus (less
the held-out validation pairs and empty lines), an interrupted preparation resumes without
redoing finished shards, other inputs or a mismatched tokenizer are refused, and streamed batches
are the in-memory path's batches."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import ROOT
from tests.training.test_training import TINY, train
from tfx_transformer.data import BatchShapes, DataError, Tokenizer
from tfx_transformer.data.shards import read_manifest, read_shard
from tfx_transformer.runs import RunPaths
from tfx_transformer.tasks.translation.prepare import PrepareOptions, prepare, survey
from tfx_transformer.tasks.translation.task import TranslationTask
from tfx_transformer.training.options import TrainOptions


def number_pairs(count, offset=0):
    from num2words import num2words

    return [(num2words(n), num2words(n, lang="fr")) for n in range(offset, offset + count)]


def write_corpus(folder, pairs, empty_at=()):
    """Two aligned files; the lines at `empty_at` (0-based) have an empty target."""
    folder.mkdir(parents=True, exist_ok=True)
    sources, targets = [], []
    for index, (source, target) in enumerate(pairs):
        sources.append(source)
        targets.append("" if index in empty_at else target)
    (folder / "c.en").write_text("\n".join(sources) + "\n", encoding="utf-8")
    (folder / "c.fr").write_text("\n".join(targets) + "\n", encoding="utf-8")
    return f"parallel:{folder / 'c.en'},{folder / 'c.fr'}"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """600 pairs, 3 with an empty side, prepared into shards of 150 lines."""
    folder = tmp_path_factory.mktemp("prepared")
    pairs = number_pairs(600)
    spec = write_corpus(folder / "corpus", pairs, empty_at=(5, 300, 599))
    options = PrepareOptions(data=spec, output=str(folder / "set"), shard_size=150,
                             validation=40, vocab_size=200, processes=2)
    manifest = prepare(options)
    return {"folder": folder / "set", "manifest": manifest, "pairs": pairs, "options": options}


def test_shards_hold_the_corpus_less_validation_and_empty_lines(prepared):
    folder, manifest, pairs = prepared["folder"], prepared["manifest"], prepared["pairs"]
    assert read_manifest(str(folder)) == manifest
    tokenizer = Tokenizer.load(str(folder / "tokenizer"))
    in_shards = []
    for shard in manifest["shards"]:
        examples = list(read_shard(folder / shard["file"]))
        assert len(examples) == shard["examples"]
        in_shards += [(tokenizer.decode([s])[0], tokenizer.decode([t])[0]) for s, t in examples]
    validation = list(zip(
        (folder / "validation.source").read_text(encoding="utf-8").splitlines(),
        (folder / "validation.target").read_text(encoding="utf-8").splitlines(),
    ))
    assert len(validation) == manifest["validation_examples"] <= 40
    usable = [p for i, p in enumerate(pairs) if i not in (5, 300, 599)]
    assert sorted(in_shards + validation) == sorted(usable)
    assert not set(in_shards) & set(validation)
    assert manifest["examples"] == len(in_shards) == len(usable) - len(validation)
    held_out_empty = 3 - sum(1 for i in (5, 300, 599) if pairs[i][0] in dict(validation))
    assert manifest["skipped_empty"] == held_out_empty
    assert sum(manifest["length_histogram"].values()) == manifest["examples"]
    assert len(manifest["shards"]) == 4


def test_the_command_line_prepares_and_shows(tmp_path):
    spec = write_corpus(tmp_path / "corpus", number_pairs(300))
    command = [sys.executable, "-m", "tfx_transformer.prepare", "--data", spec, "--output",
               str(tmp_path / "set"), "--shard-size", "100", "--vocab-size", "150",
               "--processes", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("KERAS_BACKEND", None)
    # -X importtime lists every module the process imports, and its worker's (spawned workers
    # inherit the flag and the stderr): the package's data code, neither Keras nor TensorFlow.
    done = subprocess.run([sys.executable, "-X", "importtime", *command[1:]], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "270 pairs in 3 shard(s)" in done.stdout
    imports = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
               if line.startswith("import time:")]
    imported = set(imports)
    assert imports.count("tfx_transformer.tasks.translation.prepare") == 2  # parent and worker
    assert "tfx_transformer.tasks.translation.prepare" in imported and "sentencepiece" in imported
    assert "keras" not in imported and "tensorflow" not in imported
    assert f"train with: python train.py --data prepared:{tmp_path / 'set'}" in done.stdout
    shown = subprocess.run([sys.executable, "-m", "tfx_transformer.prepare", "--show",
                            str(tmp_path / "set")], capture_output=True, text=True, cwd=ROOT,
                           env=env, timeout=300)
    assert "270 pairs in 3 shard(s)" in shown.stdout and "30 held out" in shown.stdout
    broken = subprocess.run(command[:4] + [f"parallel:{tmp_path}/none.en,{tmp_path}/none.fr",
                                           "--output", str(tmp_path / "other")],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert broken.returncode == 2 and "none.en: no such file" in broken.stderr
    assert not (tmp_path / "other").exists()


def test_an_interrupted_preparation_resumes_without_redoing_finished_shards(prepared, tmp_path):
    import shutil

    folder = tmp_path / "set"
    shutil.copytree(prepared["folder"], folder)
    # Killed while shards 1 and 3 were encoded: shard 1 not written, shard 3 written but not
    # its counts; the manifest not written.
    for name in ("manifest.json", "shard-00001.txt.gz", "shard-00001.json", "shard-00003.json"):
        (folder / name).unlink()
    untouched = {name: (folder / name).stat().st_mtime_ns
                 for name in ("shard-00000.txt.gz", "shard-00002.txt.gz", "shard-00000.json")}
    with pytest.raises(DataError, match="did not finish"):
        read_manifest(str(folder))
    options = PrepareOptions(**{**prepared["options"].__dict__, "output": str(folder)})
    manifest = prepare(options)
    assert manifest == prepared["manifest"]
    assert {name: (folder / name).stat().st_mtime_ns for name in untouched} == untouched
    for name in ("shard-00001.txt.gz", "shard-00003.txt.gz"):
        assert (folder / name).read_bytes() == (prepared["folder"] / name).read_bytes()


def test_another_preparation_into_an_unfinished_folder_is_refused(prepared, tmp_path):
    import shutil

    folder = tmp_path / "set"
    shutil.copytree(prepared["folder"], folder)
    (folder / "manifest.json").unlink()
    changed = PrepareOptions(**{**prepared["options"].__dict__, "output": str(folder),
                                "shard_size": 100})
    with pytest.raises(DataError, match="unfinished preparation of other inputs or options"):
        prepare(changed)
    prepare(PrepareOptions(**{**prepared["options"].__dict__, "output": str(folder)}))
    with pytest.raises(DataError, match="finished preparation of other inputs or options"):
        prepare(changed)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    elsewhere = PrepareOptions(**{**prepared["options"].__dict__, "output": str(tmp_path / "busy")})
    with pytest.raises(DataError, match="not a preparation folder"):
        prepare(elsewhere)


def test_the_tokenizer_sample_is_a_uniform_reservoir_whatever_the_chunk_size(tmp_path):
    lines = 50
    (tmp_path / "a").write_text("".join(f"a{n}\n" for n in range(1, lines + 1)))
    (tmp_path / "b").write_text("".join(f"b{n}\r\n" for n in range(1, lines + 1)))
    files = (str(tmp_path / "a"), str(tmp_path / "b"))
    for seed in range(3):
        # One line a chunk is the textbook reservoir, one line at a time.
        one_by_one = survey(files, 10, seed, chunk=1)
        assert survey(files, 10, seed, chunk=7) == survey(files, 10, seed) == one_by_one
        count, (numbers, rows) = one_by_one
        assert count == lines and len(numbers) == 10 and numbers == sorted(set(numbers))
        assert rows == [[f"a{n}\n".encode() for n in numbers],
                        [f"b{n}\r\n".encode() for n in numbers]]
    assert survey(files, 80, 0)[1][0] == list(range(1, lines + 1))
    drawn = np.zeros(lines + 1)
    for seed in range(1000):
        drawn[survey(files, 10, seed, chunk=16)[1][0]] += 1
    # Each line in a fifth of the samples: 200 of 1000, standard deviation 12.6.
    assert 150 < drawn[1:].min() and drawn[1:].max() < 250


def test_gzip_crlf_a_byte_order_mark_and_tsv_prepare_the_same_set(tmp_path):
    import gzip

    pairs = number_pairs(300)
    spec = write_corpus(tmp_path / "plain", pairs)
    sources, targets = ([pair[i] for pair in pairs] for i in (0, 1))
    windows = tmp_path / "windows"
    windows.mkdir()
    for name, side in (("c.en.gz", sources), ("c.fr.gz", targets)):
        with gzip.open(windows / name, "wb") as f:
            f.write(("\ufeff" + "\r\n".join(side) + "\r\n").encode("utf-8"))
    tsv = tmp_path / "c.tsv"
    tsv.write_text("\ufeff" + "".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    specs = {"plain": spec, "windows": f"parallel:{windows / 'c.en.gz'},{windows / 'c.fr.gz'}",
             "tsv": f"tsv:{tsv}"}
    made = {}
    for name, data in specs.items():
        folder = tmp_path / f"set-{name}"
        manifest = prepare(PrepareOptions(data=data, output=str(folder), shard_size=100,
                                          validation=20, vocab_size=150, processes=1))
        made[name] = (
            manifest["tokenizer"]["sha256"], manifest["examples"], manifest["tokens"],
            [(folder / shard["file"]).read_bytes() for shard in manifest["shards"]],
            (folder / "validation.source").read_text(encoding="utf-8"),
            (folder / "validation.target").read_text(encoding="utf-8"),
        )
    assert made["windows"] == made["plain"] == made["tsv"]
    assert made["plain"][1] == 280 and made["plain"][4].splitlines()[0] in sources


@pytest.mark.parametrize("problem", ["lengths", "utf8", "shifted"])
def test_bad_input_is_named_by_file_and_line(tmp_path, problem):
    pairs = number_pairs(400)
    spec = write_corpus(tmp_path / "corpus", pairs)
    source, target = tmp_path / "corpus" / "c.en", tmp_path / "corpus" / "c.fr"
    if problem == "lengths":
        target.write_text("\n".join(t for _, t in pairs[:-3]) + "\n", encoding="utf-8")
        expected = f"{target} ends at line 397 while {source} goes on"
    elif problem == "utf8":
        lines = source.read_bytes().split(b"\n")
        lines[250] = b"caf\xe9"
        source.write_bytes(b"\n".join(lines))
        expected = f"{source}:251: invalid UTF-8"
    else:
        targets = [t for _, t in pairs]
        del targets[200]
        targets.append("fin")
        target.write_text("\n".join(targets) + "\n", encoding="utf-8")
        expected = "misaligned from line 2"
    options = PrepareOptions(data=spec, output=str(tmp_path / "set"), shard_size=400,
                             vocab_size=150, processes=1, tokenizer_sample=50)
    with pytest.raises(DataError, match=expected):
        prepare(options)
    assert not (tmp_path / "set" / "manifest.json").exists()


def task_for(data, output, **overrides):
    options = TrainOptions(output=str(output), data=data, batch_tokens=256,
                           model={"d_model": 32, "d_ff": 64, "num_heads": 2}, **overrides)
    return TranslationTask(options, RunPaths(str(output)))



def test_a_streamed_corpus_is_not_packed(tmp_path):
    """Packing needs the epoch's pairs at hand: a prepared corpus streams unpacked, silently by
    default and with an error where --packing asked for it."""
    from tfx_transformer.training.loop import packing_shapes

    spec = write_corpus(tmp_path / "corpus", number_pairs(120, offset=1000))
    in_memory = task_for(spec, tmp_path / "a", max_length=24, vocab_size=300)
    config = in_memory.prepare()
    in_memory.save_vocabulary()
    packed = BatchShapes(multiple=8, fixed=True, packed=True)
    assert packing_shapes(in_memory.options, in_memory, config, packed) == packed
    batches, _ = in_memory.train_batches(0, packed)
    assert len(batches[0]) == 5  # with the segment ids
    prepare(PrepareOptions(data=spec, output=str(tmp_path / "set"), shard_size=60, validation=0,
                           tokenizer=str(tmp_path / "a" / "tokenizer"), processes=1))
    streamed = task_for(f"prepared:{tmp_path / 'set'}", tmp_path / "b", valid_data=spec,
                        max_length=24)
    config = streamed.prepare()
    assert packing_shapes(streamed.options, streamed, config, packed) == BatchShapes(8, True)
    streamed.options.packing = True
    with pytest.raises(ValueError, match="--packing: a prepared corpus"):
        packing_shapes(streamed.options, streamed, config, packed)

def test_streamed_batches_are_the_in_memory_batches(tmp_path):
    pairs = number_pairs(500, offset=1000)
    spec = write_corpus(tmp_path / "corpus", pairs, empty_at=(7,))
    valid = write_corpus(tmp_path / "valid", number_pairs(20, offset=5000))
    in_memory = task_for(spec, tmp_path / "a", valid_data=valid, max_length=24, vocab_size=300)
    in_memory.prepare()
    in_memory.save_vocabulary()
    prepare(PrepareOptions(data=spec, output=str(tmp_path / "set"), tokenizer=str(tmp_path / "a" / "tokenizer"),
                           shard_size=120, validation=0, processes=1))
    streamed = task_for(f"prepared:{tmp_path / 'set'}", tmp_path / "b", valid_data=valid,
                        max_length=24)
    streamed.prepare()
    streamed.place(0, 1)
    for shapes in (BatchShapes(), BatchShapes(multiple=8, fixed=True)):
        streamed.corpus.stream = None
        expected, padding = in_memory.train_batches(0, shapes)
        epoch, estimated_padding = streamed.train_batches(0, shapes)
        assert len(epoch) == len(expected)  # the estimate is exact in one window
        got = list(epoch.local_batches(len(epoch), 0, 1))

        def shape_and_tokens(batches):
            return sorted((b[0].shape, b[2].shape, int((b[0] != 0).sum()), int((b[2] != 0).sum()))
                          for b in batches)

        assert shape_and_tokens(got) == shape_and_tokens(expected)
        # Exact where both arrays of a batch take its bucket's width; else both sides are
        # assumed as wide as the longer, which a batch's shorter sides may not need.
        assert estimated_padding == pytest.approx(padding, abs=1e-9 if shapes.fixed else 0.02)
    assert streamed.train_examples == in_memory.train_examples


def test_a_run_resumed_with_another_tokenizer_is_refused(prepared, tmp_path):
    run = tmp_path / "run"
    other = Tokenizer.train([t for _, t in number_pairs(200)], 120)
    other.save(str(run / "tokenizer"))
    task = task_for(f"prepared:{prepared['folder']}", run, resume=True)
    with pytest.raises(DataError, match="another tokenizer than the run being resumed"):
        task.prepare()
    # And the prepared folder's own tokenizer must be the one its manifest names.
    import shutil

    copy = tmp_path / "set"
    shutil.copytree(prepared["folder"], copy)
    other.save(str(copy / "tokenizer"))
    with pytest.raises(DataError, match="not the one its shards were encoded with"):
        task_for(f"prepared:{copy}", tmp_path / "fresh").prepare()


@pytest.mark.slow
def test_training_streams_a_prepared_corpus_and_resumes(prepared, tmp_path):
    output = tmp_path / "run"
    common = ["--data", f"prepared:{prepared['folder']}", "--output", str(output), *TINY,
              "--no-export", "--checkpoint-every", "3", "--stream-window", "200",
              "--average-last", "0"]
    first = train([*common, "--steps", "3"])
    assert "pairs streamed from prepared:" in first.stdout + first.stderr
    config = json.loads((output / "config.json").read_text())
    assert config["options"]["data"] == f"prepared:{prepared['folder']}"
    anchors = [n for n in os.listdir(output / "checkpoints") if n.startswith("stream-")]
    assert len(anchors) == 1
    (output / "metrics.json").unlink()  # as if stopped before the end
    second = train([*common, "--steps", "6", "--resume"])
    log = second.stdout + second.stderr
    assert "resuming from step 3" in log
    assert json.loads((output / "metrics.json").read_text())["steps"] == 6


@pytest.mark.slow
def test_jax_training_streams_a_prepared_corpus(prepared, tmp_path):
    output = tmp_path / "run"
    result = train(["--data", f"prepared:{prepared['folder']}", "--output", str(output), *TINY,
                    "--no-export", "--steps", "3", "--average-last", "0"],
                   env={"KERAS_BACKEND": "jax"})
    assert "jax backend" in result.stdout + result.stderr
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["steps"] == 3 and np.isfinite(metrics["loss"])


@pytest.mark.slow
def test_a_killed_preparation_resumes_to_the_same_set(tmp_path, capsys):
    import signal
    import time

    spec = write_corpus(tmp_path / "corpus", number_pairs(6000))
    common = ["--data", spec, "--shard-size", "250", "--vocab-size", "150", "--processes", "1",
              "--validation", "50"]
    command = [sys.executable, "-m", "tfx_transformer.prepare", *common, "--output",
               str(tmp_path / "killed")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while len(list((tmp_path / "killed").glob("shard-*.json"))) < 3:
            assert time.time() < deadline and process.poll() is None
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the parent and its workers, mid-way
        process.wait()
    done = len(list((tmp_path / "killed").glob("shard-*.json")))
    assert not (tmp_path / "killed" / "manifest.json").exists() and done < 24
    options = dict(data=spec, shard_size=250, vocab_size=150, processes=1, validation=50)
    capsys.readouterr()
    resumed = prepare(PrepareOptions(output=str(tmp_path / "killed"), **options))
    assert f"resuming: {done} of 24 shards are done already" in capsys.readouterr().out
    whole = prepare(PrepareOptions(output=str(tmp_path / "whole"), **options))
    assert resumed == whole
    for shard in whole["shards"]:
        assert (tmp_path / "killed" / shard["file"]).read_bytes() == (
            tmp_path / "whole" / shard["file"]).read_bytes()
