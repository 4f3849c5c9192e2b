"""The SavedModel export: graph-side tokenization, cached beam search and detokenization."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfx_transformer.tasks.translation.translator import Translator
from tfx_transformer.export import export_run, next_version, read_export_info

MIXED = [
    "seventy-one",
    "two hundred and forty-three",
    "one",
    "ninety-nine",
    "one hundred and one",
    "fifty-five",
    "twelve",
]

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the SentencePiece ops)
    folder, batches = sys.argv[1], json.loads(sys.argv[2])
    serve = tf.saved_model.load(folder).signatures["serving_default"]
    answers = []
    for texts in batches:
        out = serve(text=tf.constant(texts))
        answers.append({"translation": [t.decode("utf-8") for t in out["translation"].numpy()],
                        "score": out["score"].numpy().tolist()})
    loaded_model = tf.saved_model.load(folder)
    nbest = loaded_model.signatures["nbest"](text=tf.constant(batches[0]))
    scored = loaded_model.signatures["score"](
        text=tf.constant(batches[0]), translation=tf.constant(answers[0]["translation"])
    )
    extra = {
        "nbest": [[t.decode("utf-8") for t in row] for row in nbest["translations"].numpy()],
        "nbest_scores": nbest["scores"].numpy().tolist(),
        "score": scored["score"].numpy().tolist(),
        "length": scored["length"].numpy().tolist(),
    }
    # (`import tensorflow` itself loads keras; the package and keras-hub must not be needed.)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tfx_transformer", "keras_hub"))
    print(json.dumps({"answers": answers, "loaded": loaded, **extra}))
    """
)


def python_side(exported, texts):
    translator = Translator(exported["model"], exported["tokenizer"], 4, 0.6, exported["max_length"])
    return translator.translate(texts)


def test_export_loads_alone_in_a_fresh_process_and_matches_python(exported_run, tmp_path):
    # A private copy of the run, exported, then the run deleted before the export is loaded.
    run = tmp_path / "run"
    shutil.copytree(exported_run["run"], run, ignore=shutil.ignore_patterns("export"))
    version = export_run(str(run), beam_size=4, length_penalty=0.6, max_length=12)
    served = tmp_path / "served"
    shutil.move(version, served)
    shutil.rmtree(run)

    batches = [MIXED, MIXED[2:5]]
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(served), json.dumps(batches)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    assert reply["loaded"] == []
    for texts, answer in zip(batches, reply["answers"]):
        assert answer["translation"] == python_side(exported_run, texts)
        assert len(answer["score"]) == len(texts) and all(np.isfinite(answer["score"]))
    # nbest and score, in the same TensorFlow + tensorflow-text process, equal the Python side.
    translator = Translator(exported_run["model"], exported_run["tokenizer"], 4, 0.6, exported_run["max_length"])
    for texts_row, expected in zip(reply["nbest"], translator.nbest(batches[0], 4)):
        assert texts_row == [text for text, _ in expected]
    np.testing.assert_allclose(
        reply["nbest_scores"], [[score for _, score in row] for row in translator.nbest(batches[0], 4)], atol=1e-4
    )
    expected_scores = translator.score(batches[0], reply["answers"][0]["translation"])
    np.testing.assert_allclose(reply["score"], [total for total, _ in expected_scores], atol=1e-4)
    assert reply["length"] == [len(tokens) for _, tokens in expected_scores]
    # A text's answer does not depend on the batch it came in.
    assert reply["answers"][1]["translation"] == reply["answers"][0]["translation"][2:5]
    np.testing.assert_allclose(reply["answers"][1]["score"], reply["answers"][0]["score"][2:5], atol=1e-4)


def test_cached_beam_search_in_the_graph_equals_python_decoding(exported_run):
    serve = tf.saved_model.load(exported_run["version"]).signatures["serving_default"]
    out = serve(text=tf.constant(MIXED))
    translations = [t.decode("utf-8") for t in out["translation"].numpy()]
    assert translations == python_side(exported_run, MIXED)
    # ... and the Python side's cached search equals its full recomputation.
    from tfx_transformer import beam_search

    ids = exported_run["tokenizer"].encode(MIXED[:3])
    width = max(map(len, ids)) + 1
    source = np.array([row + [3] + [0] * (width - len(row) - 1) for row in ids], "int32")
    from tfx_transformer.decoding import DEFAULT_MAX_LENGTH_FACTOR as factor  # the export's

    cached = beam_search(exported_run["model"], source, beam_size=4, max_length=12, max_length_factor=factor)
    full = beam_search(exported_run["model"], source, beam_size=4, max_length=12, use_cache=False,
                       max_length_factor=factor)
    np.testing.assert_array_equal(np.asarray(cached[0]), np.asarray(full[0]))
    np.testing.assert_allclose(out["score"].numpy()[:3], np.asarray(cached[1]), atol=1e-4)


def test_odd_inputs_never_crash(exported_run):
    serve = tf.saved_model.load(exported_run["version"]).signatures["serving_default"]
    texts = tf.constant(["", "   ", "seventy " * 12500, b"caf\xc3\x28 \xff\xfe one", "one"])
    out = serve(text=texts)
    translations = out["translation"].numpy()
    assert translations[0] == b"" and translations[1] == b""
    assert out["score"].numpy()[0] == 0.0
    assert np.all(np.isfinite(out["score"].numpy()))
    translations[3].decode("utf-8")  # valid UTF-8 out, whatever came in


def test_decode_settings_are_recorded_with_the_export(exported_run):
    info = read_export_info(exported_run["version"])
    assert info["beam_size"] == 4 and info["length_penalty"] == 0.6
    assert info["max_output_tokens"] == 12 and info["max_input_tokens"] == 24
    assert info["model"]["d_model"] == 64


def test_each_serving_graph_is_written_once(exported_run):
    """A signature traced both outside and inside tf.saved_model.save (its cache key differs
    there) was written twice: twice the tracing time and the graph's size."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((Path(exported_run["version"]) / "saved_model.pb").read_bytes())
    names = [f.signature.name for f in saved.meta_graphs[0].graph_def.library.function]
    for method in ("_serve", "_nbest", "_score", "_decode"):
        traces = [n for n in names if n.startswith(f"__inference_{method}_")]
        assert len(traces) == 1, (method, traces)


def test_versions_count_up_and_are_never_overwritten(exported_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(exported_run["run"], run, ignore=shutil.ignore_patterns("export"))
    first = export_run(str(run), max_length=12)
    assert Path(first).name == "1"
    (run / "export" / "7").mkdir()
    assert next_version(str(run / "export")) == 8
    # An export that fails after the graph is written leaves no version and no temporary folder.
    import tfx_transformer.export as export_module

    def broken_dump(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module.json, "dump", broken_dump)
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(str(run), max_length=12)
    assert sorted(os.listdir(run / "export")) == ["1", "7"]
    monkeypatch.undo()
    assert Path(export_run(str(run), max_length=12)).name == "8"
    assert tf.saved_model.load(first).signatures["serving_default"] is not None


def test_saved_model_cli_show_and_run(exported_run):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    show = subprocess.run(
        ["saved_model_cli", "show", "--dir", exported_run["version"], "--all"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert show.returncode == 0, show.stderr[-2000:]
    for expected in ("serving_default", "inputs['text']", "outputs['translation']", "outputs['score']", "DT_STRING"):
        assert expected in show.stdout
    # The three signatures as saved_model_cli shows them (what a TF Serving client reads).
    signatures = show.stdout.split("signature_def['")[1:]
    described = {block.split("'")[0]: block for block in signatures if not block.startswith("__")}
    assert set(described) == {"serving_default", "nbest", "score"}
    for name, names in {
        "nbest": ("inputs['text']", "outputs['translations']", "outputs['scores']", "(-1, 4)"),
        "score": ("inputs['text']", "inputs['translation']", "outputs['score']",
                  "outputs['token_scores']", "outputs['length']", "DT_INT32"),
    }.items():
        for expected in names:
            assert expected in described[name], (name, expected)
    run = subprocess.run(
        [sys.executable, "-m", "tfx_transformer.export.saved_model_cli", "run", "--dir",
         exported_run["version"], "--tag_set", "serve", "--signature_def", "serving_default",
         "--input_exprs", 'text=["seventy-one", "one"]'],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Result for output key translation" in run.stdout
    expected = python_side(exported_run, ["seventy-one"])[0]
    assert repr(expected.encode("utf-8"))[1:] in run.stdout or expected in run.stdout


def test_export_command(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run["run"], run, ignore=shutil.ignore_patterns("export"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "tfx_transformer.export", "--run", str(run), "--beam-size", "2",
         "--max-length", "10"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(os.path.join("export", "1"))
    assert read_export_info(done.stdout.strip())["beam_size"] == 2
    missing = subprocess.run(
        [sys.executable, "-m", "tfx_transformer.export", "--run", str(tmp_path / "nothing")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert missing.returncode == 2 and "train first" in missing.stderr
