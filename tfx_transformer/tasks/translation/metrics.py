"""Translation quality: BLEU and chrF (sacrebleu), the length of the translations against the
references (length ratio and BLEU's brevity penalty), and exact match."""

import numpy as np
import sacrebleu


def score_translations(hypotheses, references):
    """{"bleu", "chrf", "length_ratio", "brevity_penalty", "exact_match"}: corpus BLEU and chrF
    (0-100); translation tokens over reference tokens as sacrebleu counts them, and the factor
    (at most 1) by which short translations cut BLEU; exact match (0-1)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references.")
    exact = np.mean([h.strip() == r.strip() for h, r in zip(hypotheses, references)])
    bleu = sacrebleu.corpus_bleu(hypotheses, [references])
    return {
        "bleu": float(bleu.score),
        "chrf": float(sacrebleu.corpus_chrf(hypotheses, [references]).score),
        "length_ratio": float(bleu.sys_len / max(bleu.ref_len, 1)),
        "brevity_penalty": float(bleu.bp),
        "exact_match": float(exact),
    }
