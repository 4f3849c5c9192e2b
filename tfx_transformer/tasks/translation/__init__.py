"""`--task translation`: the encoder-decoder `Transformer` on parallel text.

data.py (specs, readers, the built-in number words, encoding and batches), metrics.py (BLEU,
chrF, exact match), translator.py (`Translator`, public: lists of strings translated with a
compiled decode function), task.py (`TranslationTask`), serving.py (the export's graph).
The tokenizer is the shared SentencePiece one, `tfx_transformer.data.Tokenizer`.
"""
