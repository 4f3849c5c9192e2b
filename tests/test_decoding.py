import itertools

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from tfx_transformer import Transformer, TransformerConfig, beam_search, greedy_decode
from tfx_transformer.decoding import (
    beam_search_nbest,
    gnmt_length_penalty,
    sample_decode,
    score_targets,
)

START, END = 2, 3


def make_model(vocab=30, **overrides):
    config = TransformerConfig.preset("tiny", vocab_size=vocab, dropout=0.0, **overrides)
    return Transformer(config)


def sources(rng, vocab=30, b=4, s=6):
    ids = rng.integers(4, vocab, size=(b, s))
    for row in range(b):
        ids[row, s - row :] = 0  # mixed lengths
    return ids


def reference_log_probs(model, source_row, prefix):
    """Next-token log-probabilities by a full forward pass on the prefix (no cache)."""
    logits = ops.convert_to_numpy(
        model({"source_ids": source_row[None], "target_ids": np.array([prefix])})
    )[0, -1].astype("float64")
    log_probs = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    log_probs[[0, START]] = -np.inf  # padding and the start token are never generated
    return log_probs


def test_greedy_equals_a_plain_python_loop_over_full_passes(rng):
    model = make_model()
    src = sources(rng)
    tokens, scores = greedy_decode(model, src, max_length=8)
    tokens = ops.convert_to_numpy(tokens)
    for row in range(len(src)):
        prefix, total = [START], 0.0
        for _ in range(8):
            log_probs = reference_log_probs(model, src[row], prefix)
            prefix.append(int(np.argmax(log_probs)))
            total += log_probs.max()
            if prefix[-1] == END:
                break
        expected = prefix[1:] + [0] * (9 - len(prefix))
        np.testing.assert_array_equal(tokens[row], expected)
        assert float(scores[row]) == pytest.approx(total, abs=1e-3)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"position": "learned"}, {"norm_first": True}, {"position": "shaw"}, {"position": "tener"},
     {"position": "transformer_xl"}, {"universal_steps": 3},
     {"universal_steps": 4, "adaptive_computation": True, "norm_first": True},
     {"universal_steps": 4, "adaptive_computation": True, "position": "learned"},
     {"universal_steps": 3, "adaptive_computation": True, "position": "transformer_xl"}],
)
def test_cached_decoding_equals_recomputing_the_decoder(overrides, rng):
    model = make_model(**overrides)
    src = sources(rng)
    # With a length factor of 1 the rows end at different steps (their sources differ in
    # length): on TensorFlow the cached decoders drop them from the batch as they do, so every
    # architecture's caches are selected from as well.
    for decode in (greedy_decode, lambda m, s, **k: beam_search(m, s, beam_size=3, **k)):
        for factor in (None, 1.0):
            cached = decode(model, src, max_length=10, max_length_factor=factor)
            full = decode(model, src, max_length=10, use_cache=False, max_length_factor=factor)
            np.testing.assert_array_equal(
                ops.convert_to_numpy(cached[0]), ops.convert_to_numpy(full[0])
            )
            np.testing.assert_allclose(
                ops.convert_to_numpy(cached[1]), ops.convert_to_numpy(full[1]), atol=1e-4
            )


def test_beam_size_one_equals_greedy(rng):
    model = make_model()
    src = sources(rng)
    greedy_tokens, greedy_scores = greedy_decode(model, src, max_length=9)
    beam_tokens, beam_scores = beam_search(model, src, beam_size=1, length_penalty=0.0, max_length=9)
    np.testing.assert_array_equal(ops.convert_to_numpy(beam_tokens), ops.convert_to_numpy(greedy_tokens))
    np.testing.assert_allclose(ops.convert_to_numpy(beam_scores), ops.convert_to_numpy(greedy_scores), atol=1e-4)


def exhaustive(model, src, generable, max_length):
    """Every complete hypothesis (ending with the end token, or running to max_length without
    one) and, per source row, its summed log-probability from full forward passes."""
    hypotheses = [
        sequence
        for length in range(1, max_length + 1)
        for sequence in itertools.product(generable, repeat=length)
        if END not in sequence[:-1] and (length == max_length or sequence[-1] == END)
    ]
    totals = []  # [row][hypothesis] summed log-probability
    for row in range(len(src)):
        prefix_log_probs = {}
        row_totals = []
        for sequence in hypotheses:
            total = 0.0
            for i, token in enumerate(sequence):
                prefix = (START,) + sequence[:i]
                if prefix not in prefix_log_probs:
                    prefix_log_probs[prefix] = reference_log_probs(model, src[row], list(prefix))
                total += prefix_log_probs[prefix][token]
            row_totals.append(total)
        totals.append(row_totals)
    return hypotheses, totals


def normalized(totals, hypotheses, alpha):
    return [total / ((5 + len(sequence)) / 6) ** alpha for total, sequence in zip(totals, hypotheses)]


def padded(sequence, max_length):
    return list(sequence) + [0] * (max_length - len(sequence))


def test_wide_beam_finds_the_exhaustive_optimum(rng):
    vocab, max_length = 7, 3  # generable: 1, 3 (end), 4, 5, 6
    model = make_model(vocab=vocab)
    src = sources(rng, vocab=vocab, b=2, s=4)
    hypotheses, totals = exhaustive(model, src, [1, 3, 4, 5, 6], max_length)
    for alpha in (0.0, 0.6, 1.5):
        tokens, scores = beam_search(
            model, src, beam_size=25, length_penalty=alpha, max_length=max_length
        )
        tokens, scores = ops.convert_to_numpy(tokens), ops.convert_to_numpy(scores)
        for row in range(len(src)):
            ranked = normalized(totals[row], hypotheses, alpha)
            best = int(np.argmax(ranked))
            expected = padded(hypotheses[best], max_length)
            np.testing.assert_array_equal(tokens[row], expected, err_msg=f"alpha={alpha}")
            assert scores[row] == pytest.approx(ranked[best], abs=1e-3)


def test_nbest_is_the_exhaustive_ranking_when_the_beam_holds_every_hypothesis(rng):
    vocab, max_length = 6, 3  # generable: 1, 3 (end), 4, 5: 40 complete hypotheses
    model = make_model(vocab=vocab)
    src = sources(rng, vocab=vocab, b=2, s=4)
    hypotheses, totals = exhaustive(model, src, [1, 3, 4, 5], max_length)
    assert len(hypotheses) == 40
    for alpha in (0.0, 0.6):
        tokens, scores = beam_search_nbest(
            model, src, num_hypotheses=5, beam_size=40, length_penalty=alpha, max_length=max_length
        )
        tokens, scores = ops.convert_to_numpy(tokens), ops.convert_to_numpy(scores)
        assert tokens.shape == (2, 5, max_length) and scores.shape == (2, 5)
        best, _ = beam_search(model, src, beam_size=40, length_penalty=alpha, max_length=max_length)
        np.testing.assert_array_equal(tokens[:, 0], ops.convert_to_numpy(best))
        for row in range(len(src)):
            ranked = normalized(totals[row], hypotheses, alpha)
            order = np.argsort(ranked)[::-1][:5]
            np.testing.assert_array_equal(
                tokens[row], [padded(hypotheses[i], max_length) for i in order], err_msg=f"alpha={alpha}"
            )
            np.testing.assert_allclose(scores[row], [ranked[i] for i in order], atol=1e-3)


def test_a_forced_prefix_starts_every_output_and_the_rest_is_searched(rng):
    vocab, max_length = 6, 3
    model = make_model(vocab=vocab)
    src = sources(rng, vocab=vocab, b=2, s=4)
    prefixes = np.array([[4, 0], [5, 1]])  # row 0 starts with 4; row 1 with 5, 1
    hypotheses, totals = exhaustive(model, src, [1, 3, 4, 5], max_length)
    tokens, scores = beam_search(
        model, src, beam_size=40, length_penalty=0.6, max_length=max_length, prefix_ids=prefixes
    )
    tokens, scores = ops.convert_to_numpy(tokens), ops.convert_to_numpy(scores)
    for row, prefix in enumerate([(4,), (5, 1)]):
        ranked = normalized(totals[row], hypotheses, 0.6)
        allowed = [i for i, h in enumerate(hypotheses) if h[: len(prefix)] == prefix]
        best = max(allowed, key=lambda i: ranked[i])
        np.testing.assert_array_equal(tokens[row], padded(hypotheses[best], max_length))
        assert scores[row] == pytest.approx(ranked[best], abs=1e-3)
    # Greedy: the prefix, then the most likely token at each step.
    greedy, greedy_scores = greedy_decode(model, src, max_length=max_length, prefix_ids=prefixes)
    for row, prefix in enumerate([[4], [5, 1]]):
        sequence, total = [START], 0.0
        while len(sequence) <= max_length and sequence[-1] != END:
            log_probs = reference_log_probs(model, src[row], sequence)
            token = prefix[len(sequence) - 1] if len(sequence) - 1 < len(prefix) else int(np.argmax(log_probs))
            sequence.append(token)
            total += log_probs[token]
        np.testing.assert_array_equal(ops.convert_to_numpy(greedy)[row], padded(sequence[1:], max_length))
        assert float(greedy_scores[row]) == pytest.approx(total, abs=1e-3)


def test_scoring_given_targets_matches_the_decoders_scores(rng):
    vocab, max_length = 6, 3
    model = make_model(vocab=vocab)
    src = sources(rng, vocab=vocab, b=2, s=4)
    hypotheses, totals = exhaustive(model, src, [1, 3, 4, 5], max_length)
    for row in range(len(src)):
        targets = np.array([padded(h, max_length) for h in hypotheses])
        per_token, summed = score_targets(model, np.repeat(src[row : row + 1], len(targets), 0), targets)
        np.testing.assert_allclose(ops.convert_to_numpy(summed), totals[row], atol=1e-3)
        assert np.all(ops.convert_to_numpy(per_token)[targets == 0] == 0.0)
    tokens, scores = greedy_decode(model, src, max_length=8)
    _, summed = score_targets(model, src, tokens)
    np.testing.assert_allclose(ops.convert_to_numpy(summed), ops.convert_to_numpy(scores), atol=1e-3)


def test_beam_search_is_batch_independent(rng):
    model = make_model()
    src = sources(rng)
    tokens, scores = beam_search(model, src, beam_size=4, max_length=8)
    for row in range(len(src)):
        alone_tokens, alone_scores = beam_search(model, src[row : row + 1], beam_size=4, max_length=8)
        np.testing.assert_array_equal(ops.convert_to_numpy(alone_tokens)[0], ops.convert_to_numpy(tokens)[row])
        assert float(alone_scores[0]) == pytest.approx(float(scores[row]), abs=1e-4)


def test_settled_sources_leave_the_batch_and_no_result_changes(rng):
    """On TensorFlow cached decoding drops a source once it is settled (a row once it has
    ended): the decoder sees fewer rows step after step, and every output equals the
    static-shape decoder's (the recomputing reference keeps every row to the end), eagerly and
    traced."""
    model = make_model()
    src = sources(rng)  # 6, 5, 4 and 3 real tokens: with factor 1, ended by then at the latest
    rows_seen = []
    decode_step = model.decode_step

    def counting_step(token_ids, *args):
        rows_seen.append(token_ids.shape[0])  # None where traced with a free batch size
        return decode_step(token_ids, *args)

    model.decode_step = counting_step
    prefix = np.array([[7, 0], [8, 9], [0, 0], [10, 0]])
    searches = {  # name: (decode, the rows of the first step)
        "greedy": (lambda ids, **k: greedy_decode(model, ids, max_length=10, max_length_factor=1.0,
                                                  **k), 4),
        "sample": (lambda ids, **k: sample_decode(model, ids, seed=3, max_length=10,
                                                  max_length_factor=1.0, **k), 4),
        "best": (lambda ids, **k: beam_search(model, ids, beam_size=3, max_length=10,
                                              max_length_factor=1.0, **k), 12),
        "nbest": (lambda ids, **k: beam_search_nbest(model, ids, 2, beam_size=3, max_length=10,
                                                     max_length_factor=1.0, **k), 12),
        "prefix": (lambda ids, **k: beam_search(model, ids, beam_size=3, max_length=10,
                                                prefix_ids=prefix, max_length_factor=1.5, **k), 12),
    }
    for name, (search, batch_rows) in searches.items():
        rows_seen.clear()
        tokens, scores = (ops.convert_to_numpy(x) for x in search(src))
        assert rows_seen[0] == batch_rows and rows_seen[-1] < batch_rows, (name, rows_seen)
        assert rows_seen == sorted(rows_seen, reverse=True), (name, rows_seen)
        full_tokens, full_scores = (ops.convert_to_numpy(x) for x in search(src, use_cache=False))
        np.testing.assert_array_equal(tokens, full_tokens, err_msg=name)
        np.testing.assert_allclose(scores, full_scores, atol=1e-4, err_msg=name)
        dynamic = tf.function(search, input_signature=[tf.TensorSpec([None, None], tf.int32)])
        static = tf.function(search)  # every shape known when traced
        for traced in (dynamic, static):
            np.testing.assert_array_equal(traced(tf.constant(src, tf.int32))[0].numpy(), tokens)


def test_decoding_traces_once_in_a_tf_function(rng):
    model = make_model()
    traces = []

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def translate(ids):
        traces.append(1)
        return beam_search(model, ids, beam_size=3, max_length=7)

    src = sources(rng)
    eager = ops.convert_to_numpy(beam_search(model, src, beam_size=3, max_length=7)[0])
    np.testing.assert_array_equal(translate(tf.constant(src, tf.int32))[0].numpy(), eager)
    translate(tf.constant(src[:2, :3], tf.int32))
    assert len(traces) == 1


def test_length_penalty_formula():
    np.testing.assert_allclose(ops.convert_to_numpy(gnmt_length_penalty(7, 0.6)), 2.0**0.6, rtol=1e-6)
    assert float(gnmt_length_penalty(40, 0.0)) == 1.0


def first_token_frequencies(model, source_row, rows=4000, **options):
    tokens, _ = sample_decode(model, np.repeat(source_row[None], rows, 0), max_length=1, **options)
    return np.bincount(ops.convert_to_numpy(tokens)[:, 0], minlength=model.model_config.vocab_size) / rows


def test_sampling_draws_from_the_tempered_and_truncated_distribution(rng):
    model = make_model()
    source_row = sources(rng, b=1)[0]
    log_probs = reference_log_probs(model, source_row, [START])
    for temperature in (1.0, 0.5):
        expected = np.exp(log_probs / temperature - np.logaddexp.reduce(log_probs / temperature))
        observed = first_token_frequencies(model, source_row, temperature=temperature, seed=7)
        assert np.abs(observed - expected).max() < 0.03, temperature
    top3 = np.argsort(log_probs)[::-1][:3]
    observed = first_token_frequencies(model, source_row, top_k=3, seed=8)
    assert set(np.flatnonzero(observed)) == set(top3)
    expected = np.exp(log_probs[top3] - np.logaddexp.reduce(log_probs[top3]))
    np.testing.assert_allclose(observed[top3], expected, atol=0.03)
    ranked = np.argsort(log_probs)[::-1]
    probs = np.exp(log_probs - np.logaddexp.reduce(log_probs))[ranked]  # over the generable tokens
    mass_before = np.cumsum(probs) - probs
    nucleus = set(ranked[mass_before < 0.5])
    observed = first_token_frequencies(model, source_row, top_p=0.5, seed=9)
    assert set(np.flatnonzero(observed)) == nucleus


def test_sampling_is_seeded_traced_once_and_scored_by_the_model(rng):
    model = make_model()
    src = sources(rng, b=4)
    tokens, scores = sample_decode(model, src, seed=3, max_length=8)
    again, _ = sample_decode(model, src, seed=3, max_length=8)
    other, _ = sample_decode(model, src, seed=4, max_length=8)
    np.testing.assert_array_equal(ops.convert_to_numpy(tokens), ops.convert_to_numpy(again))
    assert not np.array_equal(ops.convert_to_numpy(tokens), ops.convert_to_numpy(other))
    _, summed = score_targets(model, src, tokens)
    np.testing.assert_allclose(ops.convert_to_numpy(summed), ops.convert_to_numpy(scores), atol=1e-3)
    greedy, _ = greedy_decode(model, src, max_length=8)
    top1, _ = sample_decode(model, src, top_k=1, temperature=2.0, seed=5, max_length=8)
    np.testing.assert_array_equal(ops.convert_to_numpy(top1), ops.convert_to_numpy(greedy))
    traces = []

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def sample(source):
        traces.append(1)
        return sample_decode(model, source, top_p=0.9, seed=3, max_length=8)

    traced, _ = sample(tf.constant(src, tf.int32))
    sample(tf.constant(src[:2, :4], tf.int32))
    assert len(traces) == 1
    eager, _ = sample_decode(model, src, top_p=0.9, seed=3, max_length=8)
    np.testing.assert_array_equal(traced.numpy(), ops.convert_to_numpy(eager))


def test_decoding_argument_errors(rng):
    model = make_model(position="learned")
    with pytest.raises(ValueError, match="max_length"):
        greedy_decode(model, sources(rng), max_length=1000)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, sources(rng), beam_size=0)
    with pytest.raises(ValueError, match="num_hypotheses"):
        beam_search_nbest(model, sources(rng), num_hypotheses=5, beam_size=4)
    with pytest.raises(ValueError, match="prefix_ids"):
        greedy_decode(model, sources(rng), max_length=4, prefix_ids=np.ones((4, 5), "int32"))
    with pytest.raises(ValueError, match="prefix_ids"):
        beam_search(model, sources(rng), max_length=4, prefix_ids=np.ones((4,), "int32"))
    for bad in ({"temperature": 0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}, {"seed": "x"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            sample_decode(model, sources(rng), max_length=4, **bad)


class EndFirstModel:
    """A stand-in decoder whose first step prefers the end token (log-probability ~ -0.02) and
    whose later steps are uniform: the best beam ends at once, the other beams stay open."""

    def __init__(self, vocab=8, max_length=10):
        self.model_config = TransformerConfig.preset(
            "tiny", vocab_size=vocab, max_length=max_length, dropout=0.0
        )

    def encode(self, source_ids, training=False):
        return ops.cast(ops.expand_dims(source_ids, -1), "float32"), ops.not_equal(source_ids, 0)

    def start_decoding(self, encoder_output, max_length):
        return ops.zeros((ops.shape(encoder_output)[0], 1)), None

    def decode_step(self, current, index, self_cache, cross_cache, source_mask):
        vocab = self.model_config.vocab_size
        first = ops.where(ops.equal(ops.arange(vocab), END), 8.0, 0.0)
        logits = ops.where(index == 0, first, ops.zeros((vocab,)))
        return ops.zeros((ops.shape(current)[0], 1)) + ops.expand_dims(logits, 0), self_cache


def test_the_search_ends_when_the_best_beam_has_ended(rng):
    model = EndFirstModel()
    src = rng.integers(4, 8, size=(2, 3))
    tokens, scores = beam_search(model, src, beam_size=3, max_length=10)
    np.testing.assert_array_equal(ops.convert_to_numpy(tokens)[:, 0], [END, END])
    # The open beams were closed at the first step rather than extended to max_length.
    from tfx_transformer.decoding import _search

    _, _, lengths = _search(model, src, 3, 0.6, 10, None, None, True, None, settled_by=1)
    np.testing.assert_array_equal(ops.convert_to_numpy(lengths), np.ones((2, 3)))
    # The n best wait until n beams have ended: the 2 open beams go on past the first step.
    nbest, _ = beam_search_nbest(model, src, num_hypotheses=3, max_length=10)
    nbest = ops.convert_to_numpy(nbest)
    assert (nbest[:, 0, 0] == END).all() and (nbest[:, 1:, 1] != 0).all()


def test_max_length_factor_cuts_each_row_at_its_own_limit(rng):
    model = EndFirstModel()  # after its first step, uniform: beams rarely end on their own
    src = np.array([[4, 5, 3, 0, 0, 0], [4, 5, 6, 7, 5, 3]])  # 3 and 6 real tokens
    from tfx_transformer.decoding import _search

    _, _, lengths = _search(model, src, 3, 0.6, 10, None, None, True, None, settled_by=3,
                            max_length_factor=1.5)
    lengths = ops.convert_to_numpy(lengths)
    assert lengths[0].max() <= 5 and lengths[1].max() <= 9  # ceil(1.5 * 3), ceil(1.5 * 6)
    tokens, _ = greedy_decode(model, src, max_length=10, max_length_factor=1.0)
    assert (ops.convert_to_numpy(tokens)[:, :1] == END).all()  # greedy ends at once here anyway
    # The buffers and the cache hold what the widest row may use: ceil(1.5 * 6) = 9 < 10, also
    # where the width is known only when the graph runs.
    eager, _ = beam_search(model, src, beam_size=3, max_length=10, max_length_factor=1.5)
    traced = tf.function(
        lambda ids: beam_search(model, ids, beam_size=3, max_length=10, max_length_factor=1.5),
        input_signature=[tf.TensorSpec([None, None], tf.int32)],
    )(src)[0]
    assert eager.shape[1] == 9 and tuple(traced.shape) == (2, 9)
    np.testing.assert_array_equal(ops.convert_to_numpy(traced), ops.convert_to_numpy(eager))
    with pytest.raises(ValueError, match="max_length_factor"):
        beam_search(model, src, max_length_factor=0)
