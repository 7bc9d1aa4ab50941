"""Tiny randomly initialised models built in the test run (nothing downloaded): a 2-layer Llama
with a byte-level BPE tokenizer trained here on a few sentences, and a chat template like
SmolLM2's. The model hub's and the trainers' tests share them."""
from __future__ import annotations

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

OUTPUT_STD = 0.6

CORPUS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Explain photosynthesis: plants turn light, water and carbon dioxide into sugar and oxygen.",
    "Think step by step. First add the numbers, then divide by two.",
    "Reference documents help the model answer questions about facts it has not memorised.",
    "A helpful assistant answers the question, is honest, and avoids harm.",
    "user assistant system: hello, how are you today? I am fine, thank you!",
    "Write a short poem about the sea, the wind and the stars at night.",
    "email phone number card 0123456789 @ . , ; : ! ? ( ) [ ] - + = / * # % & '",
]


def build_tiny_model(path, *, seed: int = 0):
    """Save a tiny Llama (2 layers, hidden 32) and its tokenizer to `path`; returns `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(CORPUS * 3, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<|im_end|>", bos_token="<|im_start|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    # Bigger-than-default output weights make the random distribution peaked enough that
    # top-p < 1 keeps a small nucleus, like a trained model's.
    with torch.no_grad():
        model.lm_head.weight.normal_(0, OUTPUT_STD)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
