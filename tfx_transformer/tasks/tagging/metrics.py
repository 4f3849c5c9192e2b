"""Entity-level precision, recall and F1 over BIO / IOBES tag sequences, as conlleval and seqeval
count them: an entity is a (type, start, end) span, and only an exact span with the right type
is a hit."""


def _split(tag):
    if tag in ("O", "", None):
        return "O", ""
    prefix, _, kind = tag.partition("-")
    if not kind:  # a bare type ("PER"), as in the IO scheme
        return "I", prefix
    return prefix, kind


def _ends(previous, tag, previous_type, kind):
    if previous in ("E", "S"):
        return True
    if previous in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return previous != "O" and previous_type != kind


def _starts(previous, tag, previous_type, kind):
    if tag in ("B", "S"):
        return True
    if tag in ("I", "E") and previous in ("E", "S", "O"):
        return True
    return tag != "O" and previous_type != kind


def entity_spans(tags):
    """[(type, first, last)] of one sentence's tags; an I- after O or another type starts one."""
    spans = []
    previous, previous_type, start = "O", "", None
    for index, tag in enumerate(list(tags) + ["O"]):
        prefix, kind = _split(tag)
        if start is not None and _ends(previous, prefix, previous_type, kind):
            spans.append((previous_type, start, index - 1))
            start = None
        if _starts(previous, prefix, previous_type, kind):
            start = index
        previous, previous_type = prefix, kind
    return spans


def entity_scores(true_tags, predicted_tags):
    """{"precision", "recall", "f1"} (micro over entities) and per-type F1 as "f1_TYPE".

    Both arguments are lists of sentences' tag lists, aligned token for token.
    """
    if len(true_tags) != len(predicted_tags):
        raise ValueError(f"{len(true_tags)} true sentences for {len(predicted_tags)} predicted.")
    true_total = predicted_total = hits = 0
    per_type = {}
    for row, (truth, predicted) in enumerate(zip(true_tags, predicted_tags)):
        if len(truth) != len(predicted):
            raise ValueError(
                f"sentence {row}: {len(truth)} true tags but {len(predicted)} predicted."
            )
        true_spans = set(entity_spans(truth))
        predicted_spans = set(entity_spans(predicted))
        true_total += len(true_spans)
        predicted_total += len(predicted_spans)
        hits += len(true_spans & predicted_spans)
        for spans, slot in ((true_spans, 0), (predicted_spans, 1)):
            for span in spans:
                per_type.setdefault(span[0], [0, 0, 0])[slot] += 1
        for span in true_spans & predicted_spans:
            per_type[span[0]][2] += 1
    scores = _prf(true_total, predicted_total, hits)
    for kind, (true_count, predicted_count, kind_hits) in sorted(per_type.items()):
        scores[f"f1_{kind}"] = _prf(true_count, predicted_count, kind_hits)["f1"]
    return scores


def _prf(true_count, predicted_count, hits):
    precision = hits / predicted_count if predicted_count else 0.0
    recall = hits / true_count if true_count else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
