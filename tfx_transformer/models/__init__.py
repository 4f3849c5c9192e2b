"""The package's models, each a `keras.Model` built from a `TransformerConfig`.

- `Transformer`: the encoder-decoder translator (transformer.py);
- `TransformerTagger`: the encoder with a tag per token (tagger.py);
- `TransformerLM`: a decoder-only language model, with Transformer-XL memory (lm.py);
- base.py: what the three share (the saved config, embeddings, one self-attention stack).
"""

from tfx_transformer.models.lm import TransformerLM
from tfx_transformer.models.tagger import TransformerTagger
from tfx_transformer.models.transformer import Transformer

__all__ = ["Transformer", "TransformerLM", "TransformerTagger"]
