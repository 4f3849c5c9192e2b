"""Translation quality: BLEU and chrF (sacrebleu), the length of the translations against the
references (length ratio and BLEU's brevity penalty), and exact match.

BLEU counts words, and sacrebleu's default tokenizer (13a) finds them between spaces: a language
written without spaces between words (Chinese, Japanese, Thai) is then one "word" a sentence,
and BLEU is 0 for any translation short of perfect. `bleu_tokenizer` picks the tokenizer that
sacrebleu's own command line picks for such a target language (`-l xx-zh` and so on) from the
references' script, since a training run knows its text, not its languages."""

import functools

import numpy as np
import sacrebleu
from sacrebleu.metrics import BLEU

# --bleu-tokenize: "auto" (bleu_tokenizer's choice) or a sacrebleu tokenizer.
BLEU_TOKENIZE_CHOICES = ("auto", *BLEU.TOKENIZERS)

# Code point ranges of the scripts that decide the tokenizer.
HAN = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))
KANA = ((0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
HANGUL = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xAC00, 0xD7AF))
# Thai, Lao, Tibetan, Myanmar and Khmer write no spaces between words either, and sacrebleu has
# no word tokenizer for them that works offline (flores200 downloads a model): BLEU over
# characters is what remains.
UNSPACED = ((0x0E00, 0x0EFF), (0x0F00, 0x0FFF), (0x1000, 0x109F), (0x1780, 0x17FF))
SAMPLED_CHARACTERS = 200_000  # enough to tell a script, and cheap on any validation set


def score_translations(hypotheses, references, tokenize="auto"):
    """{"bleu", "chrf", "length_ratio", "brevity_penalty", "exact_match"}: corpus BLEU and chrF
    (0-100); translation tokens over reference tokens as sacrebleu counts them, and the factor
    (at most 1) by which short translations cut BLEU; exact match (0-1). `tokenize`: how BLEU
    splits words, a sacrebleu tokenizer or "auto" (`bleu_tokenizer` of the references)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references.")
    if tokenize == "auto":
        tokenize = bleu_tokenizer(references)
    exact = np.mean([h.strip() == r.strip() for h, r in zip(hypotheses, references)])
    bleu = bleu_metric(tokenize).corpus_score(hypotheses, [references])
    return {
        "bleu": float(bleu.score),
        "chrf": float(sacrebleu.corpus_chrf(hypotheses, [references]).score),
        "length_ratio": float(bleu.sys_len / max(bleu.ref_len, 1)),
        "brevity_penalty": float(bleu.bp),
        "exact_match": float(exact),
    }


@functools.lru_cache(maxsize=None)
def bleu_metric(tokenize):
    """sacrebleu's BLEU with `tokenize`, made once (MeCab's tokenizers load a dictionary).
    Raises ValueError naming the tokenizer where it cannot be made (a missing extra)."""
    if tokenize not in BLEU.TOKENIZERS:
        raise ValueError(
            f"BLEU tokenizer must be one of {BLEU_TOKENIZE_CHOICES}. Received: {tokenize!r}"
        )
    try:
        return BLEU(tokenize=tokenize)
    except Exception as error:  # sacrebleu raises RuntimeError, or URLError for flores models
        raise ValueError(f"BLEU tokenizer {tokenize!r}: {' '.join(str(error).split())}") from None


def bleu_tokenizer(references):
    """The sacrebleu tokenizer for target text like `references`, as sacrebleu picks it for the
    language: "zh" for Chinese, "ja-mecab" for Japanese ("char" where sacrebleu's Japanese
    extra is not installed), "ko-mecab" for Korean (where installed; "13a" otherwise, since
    Korean puts spaces between words), "char" for Thai, Lao, Tibetan, Myanmar and Khmer, "13a"
    for everything else. A script counts when it writes most of the letters."""
    counts = script_counts(references)
    letters = max(counts["letters"], 1)
    if (counts["han"] + counts["kana"]) / letters > 0.5:
        # Japanese mixes kana into its Han characters; Chinese has none.
        if counts["kana"] / (counts["han"] + counts["kana"]) > 0.05:
            return "ja-mecab" if tokenizer_available("ja-mecab") else "char"
        return "zh"
    if counts["hangul"] / letters > 0.5:
        return "ko-mecab" if tokenizer_available("ko-mecab") else "13a"
    if counts["unspaced"] / letters > 0.5:
        return "char"
    return "13a"


def script_counts(texts):
    """Letters of `texts` (their first SAMPLED_CHARACTERS characters) in all and in each of
    the scripts that decide the tokenizer."""
    counts = dict.fromkeys(("letters", "han", "kana", "hangul", "unspaced"), 0)
    scripts = (("han", HAN), ("kana", KANA), ("hangul", HANGUL), ("unspaced", UNSPACED))
    seen = 0
    for text in texts:
        for character in text:
            if not character.isalpha():
                continue
            counts["letters"] += 1
            point = ord(character)
            if point >= 0x0E00:  # below it, Latin, Greek, Cyrillic, Arabic, Indic...: none
                for name, ranges in scripts:
                    if any(low <= point <= high for low, high in ranges):
                        counts[name] += 1
                        break
        seen += len(text)
        if seen >= SAMPLED_CHARACTERS:
            break
    return counts


def tokenizer_available(tokenize):
    try:
        bleu_metric(tokenize)
    except ValueError:
        return False
    return True
