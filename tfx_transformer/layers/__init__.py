"""The Transformer's building blocks as Keras 3 layers (backend-agnostic: `keras.ops` only)."""

from tfx_transformer.layers.attention import SCORE_FUNCTIONS, Attention, MultiHeadAttention, masked_softmax
from tfx_transformer.layers.decoder import Decoder, DecoderBlock
from tfx_transformer.layers.dropout import Dropout
from tfx_transformer.layers.encoder import Encoder, EncoderBlock
from tfx_transformer.layers.feed_forward import PositionwiseFeedForward
from tfx_transformer.layers.linformer import LinformerAttention
from tfx_transformer.layers.masks import (
    PAD_ID,
    causal_mask,
    combine_masks,
    decoder_self_attention_mask,
    key_padding_mask,
    masked_fill_value,
    packed_causal_mask,
    padding_mask,
    same_segment_mask,
    segment_positions,
)
from tfx_transformer.layers.position import (
    LearnedPositionEmbedding,
    SinusoidalPositionEncoding,
    TokenEmbedding,
    sinusoid,
    sinusoidal_encoding,
)
from tfx_transformer.layers.relative import (
    RELATIVE_ATTENTION,
    ShawRelativeAttention,
    TenerAttention,
    TransformerXLAttention,
    relative_distances,
)
from tfx_transformer.layers.universal import UniversalDecoder, UniversalEncoder

__all__ = [
    "Attention",
    "Decoder",
    "DecoderBlock",
    "Dropout",
    "Encoder",
    "EncoderBlock",
    "LearnedPositionEmbedding",
    "LinformerAttention",
    "MultiHeadAttention",
    "PAD_ID",
    "PositionwiseFeedForward",
    "RELATIVE_ATTENTION",
    "SCORE_FUNCTIONS",
    "ShawRelativeAttention",
    "SinusoidalPositionEncoding",
    "TenerAttention",
    "TokenEmbedding",
    "TransformerXLAttention",
    "UniversalDecoder",
    "UniversalEncoder",
    "causal_mask",
    "combine_masks",
    "decoder_self_attention_mask",
    "key_padding_mask",
    "masked_fill_value",
    "masked_softmax",
    "packed_causal_mask",
    "padding_mask",
    "relative_distances",
    "same_segment_mask",
    "segment_positions",
    "sinusoid",
    "sinusoidal_encoding",
]
