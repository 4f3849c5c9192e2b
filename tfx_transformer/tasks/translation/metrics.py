"""Translation quality: decode a set with the model, then BLEU and chrF (sacrebleu) and exact match."""

import numpy as np
import sacrebleu
import tensorflow as tf

from tfx_transformer import decoding
from tfx_transformer.data import pad_rows
from tfx_transformer.tokens import END_ID


def make_translate_ids(model, beam_size=4, length_penalty=0.6, max_length=None):
    """A tf.function [B, S] int32 ids -> ([B, L] ids, [B] scores) that traces once."""
    max_length = max_length or model.model_config.max_length

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def translate_ids(source_ids):
        return decoding.translate_ids(model, source_ids, beam_size, length_penalty, max_length)

    return translate_ids


def translate_texts(translate_ids, tokenizer, texts, max_length, batch_size=64):
    """Source strings -> translations, batched by length to waste little on padding."""
    encoded = [ids[: max_length - 1] + [END_ID] for ids in tokenizer.encode(texts)]
    order = np.argsort([len(e) for e in encoded], kind="stable")
    results = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        tokens, _ = translate_ids(tf.constant(pad_rows([encoded[i] for i in chunk])))
        for i, text in zip(chunk, tokenizer.decode(tokens.numpy())):
            results[i] = text
    return results


def score_translations(hypotheses, references):
    """{"bleu", "chrf", "exact_match"}: corpus BLEU and chrF (0-100), exact match (0-1)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references.")
    exact = np.mean([h.strip() == r.strip() for h, r in zip(hypotheses, references)])
    return {
        "bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
        "chrf": float(sacrebleu.corpus_chrf(hypotheses, [references]).score),
        "exact_match": float(exact),
    }
