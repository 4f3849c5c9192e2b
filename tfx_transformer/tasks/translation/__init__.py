"""`--task translation`: the encoder-decoder `Transformer` on parallel text.

data.py (specs, readers, the built-in number words, encoding and batches), metrics.py (decoding
a set; BLEU, chrF, exact match), task.py (`TranslationTask`), serving.py (the export's graph).
The tokenizer is the shared SentencePiece one, `tfx_transformer.data.Tokenizer`.
"""
