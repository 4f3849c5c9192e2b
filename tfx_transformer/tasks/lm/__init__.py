"""`--task lm`: the decoder-only `TransformerLM` on long text, vanilla or Transformer-XL.

data.py (text files, the built-in counting text, token streams, segment batches), metrics.py
(perplexity per segment, by sliding window and with memory), task.py (`LanguageModelTask`).
It has no SavedModel export.
"""
