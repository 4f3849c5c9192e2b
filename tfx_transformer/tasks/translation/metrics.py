"""Translation quality: BLEU and chrF (sacrebleu) and exact match of decoded translations."""

import numpy as np
import sacrebleu


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
