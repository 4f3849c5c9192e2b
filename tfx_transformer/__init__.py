"""tfx_transformer: the encoder-decoder Transformer as Keras 3 layers, from training to serving."""

from tfx_transformer import layers
from tfx_transformer.config import PRESETS, TransformerConfig
from tfx_transformer.decoding import beam_search, greedy_decode
from tfx_transformer.lm import TransformerLM
from tfx_transformer.model import Transformer
from tfx_transformer.tagger import TransformerTagger

__version__ = "0.1.0"
