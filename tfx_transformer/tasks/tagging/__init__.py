"""`--task tagging`: the encoder-only `TransformerTagger`, a tag per word (e.g. named entities).

data.py (CoNLL files, the built-in entity set, encoding and batches), vocabulary.py (words and
tags as ids), metrics.py (entity precision, recall, F1), task.py (`TaggingTask`), serving.py
(the export's graph).
"""
