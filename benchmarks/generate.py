"""Generation speed: our cached beam search against Hugging Face MarianMT's generate(), both on
this CPU with the dimensions of the `small` preset as it was when measured (3 + 3 layers) and
random weights.

    pip install torch transformers   # for this benchmark only; not a dependency of the package
    python benchmarks/generate.py [--rounds 5]

Batch 32 sources of 24 tokens, beam 4 (and greedy), exactly 64 generated tokens per sentence:
the end token is never produced (ours: end_id=-1; MarianMT: min_new_tokens=64), so both do the
same work. d_model 256, 4 heads, d_ff 1024, 3 + 3 layers, vocabulary 8,000; both on 2 threads.
The figure is sentences per second, median over rounds that alternate the two.
"""

import argparse
import sys

from common import alternate, machine, median

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfx_transformer as tt  # noqa: E402

BATCH, SOURCE_LENGTH, NEW_TOKENS, VOCAB = 32, 24, 64, 8000


def ours(source, beam):
    config = tt.TransformerConfig.preset("small", vocab_size=VOCAB, max_length=128,
                                         num_encoder_layers=3, num_decoder_layers=3)
    keras.utils.set_random_seed(0)
    model = tt.Transformer(config)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def generate(ids):
        if beam == 1:
            return tt.greedy_decode(model, ids, max_length=NEW_TOKENS, end_id=-1)
        return tt.beam_search(model, ids, beam_size=beam, max_length=NEW_TOKENS, end_id=-1)

    tensor = tf.constant(source)
    generate(tensor)
    return lambda: generate(tensor)[0].numpy()


def marian(source, beam):
    import torch
    from transformers import MarianConfig, MarianMTModel

    torch.set_num_threads(2)
    config = MarianConfig(
        vocab_size=VOCAB, d_model=256, encoder_layers=3, decoder_layers=3,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=1024,
        decoder_ffn_dim=1024, max_position_embeddings=128, pad_token_id=0, eos_token_id=3,
        decoder_start_token_id=2, forced_eos_token_id=None,
    )
    torch.manual_seed(0)
    model = MarianMTModel(config).eval()
    ids = torch.tensor(source, dtype=torch.long)

    def generate():
        with torch.inference_mode():
            return model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=beam,
                max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                early_stopping=False, use_cache=True,
            )

    generate()
    return generate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError:
        print("this benchmark needs torch and transformers: pip install torch transformers")
        return 2
    print(f"machine: {machine()}; transformers {transformers.__version__}")
    source = np.random.default_rng(0).integers(4, VOCAB, size=(BATCH, SOURCE_LENGTH)).astype("int32")
    rows = []
    for beam in (4, 1):
        functions = {"ours": ours(source, beam), "MarianMT": marian(source, beam)}
        times = alternate(functions, args.rounds)
        rates = {name: BATCH / median(values) for name, values in times.items()}
        label = "greedy" if beam == 1 else f"beam {beam}"
        rows.append((label, rates["ours"], rates["MarianMT"]))
        print(f"{label}: ours {rates['ours']:.1f} sentences/s, MarianMT {rates['MarianMT']:.1f}, "
              f"ratio {rates['ours'] / rates['MarianMT']:.2f}x", flush=True)
    print("\ndecoding   ours sent/s   MarianMT sent/s   ours / MarianMT")
    for label, a, b in rows:
        print(f"{label:<10} {a:11.1f} {b:17.1f} {a / b:17.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
