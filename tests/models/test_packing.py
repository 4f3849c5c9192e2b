"""Packed rows: several examples in one row give each example the logits it has alone."""

import numpy as np
import pytest
from keras import ops

from tests.models.test_transformer import VARIANTS, VOCAB, logits, tiny_model
from tfx_transformer import TransformerConfig
from tfx_transformer.layers import packed_causal_mask, same_segment_mask, segment_positions
from tfx_transformer.models import TransformerTagger

PACKABLE = [v for v in VARIANTS if "linformer_length" not in v]


def examples(rng, lengths):
    return [
        (rng.integers(4, VOCAB, size=s), rng.integers(4, VOCAB, size=t)) for s, t in lengths
    ]


def pack(rows, width_s, width_t):
    """Rows of examples -> (source ids, target ids, source segments, target segments)."""
    arrays = [np.zeros((len(rows), w), "int32") for w in (width_s, width_t, width_s, width_t)]
    for r, row in enumerate(rows):
        at_s = at_t = 0
        for segment, (source, target) in enumerate(row, start=1):
            arrays[0][r, at_s : at_s + len(source)] = source
            arrays[2][r, at_s : at_s + len(source)] = segment
            arrays[1][r, at_t : at_t + len(target)] = target
            arrays[3][r, at_t : at_t + len(target)] = segment
            at_s, at_t = at_s + len(source), at_t + len(target)
    return arrays


@pytest.mark.parametrize("overrides", PACKABLE)
def test_a_packed_example_has_the_logits_it_has_alone(overrides, rng):
    model = tiny_model(**overrides)
    first, second, third = examples(rng, [(3, 5), (6, 2), (4, 4)])
    rows = [[first, second], [third]]  # row 1 ends in padding on both sides
    source, target, source_segments, target_segments = pack(rows, 10, 8)
    packed = ops.convert_to_numpy(model({
        "source_ids": source, "target_ids": target,
        "source_segment_ids": source_segments, "target_segment_ids": target_segments,
    }))
    for r, row in enumerate(rows):
        at = 0
        for example_source, example_target in row:
            alone = logits(model, example_source[None], example_target[None])[0]
            np.testing.assert_allclose(packed[r, at : at + len(example_target)], alone, atol=2e-5)
            at += len(example_target)


def test_unpacked_rows_would_differ(rng):
    # The check above fails where segments are ignored: the second example then sees the first.
    model = tiny_model()
    first, second = examples(rng, [(3, 5), (6, 2)])
    source, target, _, _ = pack([[first, second]], 9, 7)
    together = logits(model, source, target)[0, 5:7]
    alone = logits(model, second[0][None], second[1][None])[0]
    assert not np.allclose(together, alone, atol=1e-3)


def test_segment_positions_and_masks():
    segments = np.array([[1, 1, 1, 2, 2, 3, 0, 0]])
    np.testing.assert_array_equal(
        ops.convert_to_numpy(segment_positions(segments)), [[0, 1, 2, 0, 1, 0, 0, 0]]
    )
    same = ops.convert_to_numpy(same_segment_mask(segments, np.array([[1, 2, 2, 0]])))
    assert same.shape == (1, 8, 4)
    np.testing.assert_array_equal(same[0, 0], [True, False, False, False])
    np.testing.assert_array_equal(same[0, 3], [False, True, True, False])
    np.testing.assert_array_equal(same[0, 5], [False, False, False, False])  # no source: none
    np.testing.assert_array_equal(same[0, 7], [True, True, True, True])  # padding: any key
    causal = ops.convert_to_numpy(packed_causal_mask(segments))
    np.testing.assert_array_equal(causal[0, 4], [False, False, False, True, True, False, False, False])


def test_packed_rows_need_both_segments_and_no_linformer(rng):
    source, target, source_segments, _ = pack([examples(rng, [(3, 3)])], 4, 4)
    with pytest.raises(ValueError, match="both 'source_segment_ids' and 'target_segment_ids'"):
        tiny_model()({"source_ids": source, "target_ids": target,
                      "source_segment_ids": source_segments})
    with pytest.raises(ValueError, match="Linformer"):
        tiny_model(linformer_length=8)({
            "source_ids": source, "target_ids": target,
            "source_segment_ids": source_segments, "target_segment_ids": source_segments,
        })


def pack_sentences(rows, width):
    """Rows of sentences -> (token ids, segment ids) [len(rows), width], as the tagger takes."""
    ids, segments = (np.zeros((len(rows), width), "int32") for _ in range(2))
    for r, row in enumerate(rows):
        at = 0
        for segment, sentence in enumerate(row, start=1):
            ids[r, at : at + len(sentence)] = sentence
            segments[r, at : at + len(sentence)] = segment
            at += len(sentence)
    return ids, segments


@pytest.mark.parametrize("overrides", PACKABLE)
def test_a_packed_sentence_is_tagged_as_it_is_alone(overrides, rng):
    model = TransformerTagger(TransformerConfig.preset("tiny", vocab_size=VOCAB, **overrides),
                              num_tags=5)
    first, second, third = (rng.integers(4, VOCAB, size=n) for n in (4, 5, 6))
    rows = [[first, second], [third]]  # row 1 ends in padding
    ids, segments = pack_sentences(rows, 10)
    packed = ops.convert_to_numpy(model({"token_ids": ids, "segment_ids": segments}))
    together = ops.convert_to_numpy(model(ids))
    for r, row in enumerate(rows):
        at = 0
        for sentence in row:
            alone = ops.convert_to_numpy(model(sentence[None]))[0]
            np.testing.assert_allclose(packed[r, at : at + len(sentence)], alone, atol=2e-5)
            at += len(sentence)
    # Without its segments the second sentence sees the first (the check above means something).
    assert not np.allclose(together[0, 4:9], packed[0, 4:9], atol=1e-3)


def test_a_packed_tagger_refuses_linformer(rng):
    model = TransformerTagger(
        TransformerConfig.preset("tiny", vocab_size=VOCAB, linformer_length=8), num_tags=3
    )
    ids, segments = pack_sentences([[rng.integers(4, VOCAB, size=3)]], 8)
    with pytest.raises(ValueError, match="Linformer"):
        model({"token_ids": ids, "segment_ids": segments})
