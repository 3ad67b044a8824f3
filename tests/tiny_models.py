"""Tiny models built from scratch in seconds, so tests exercise the real engines with no download.

The LLM is a 2-layer Qwen2 that vLLM loads like any other; it is briefly trained on a toy
sentiment language so that its answers carry signal a test can check. The encoder is a 2-layer
BERT that the SLM fine-tunes.
"""

from __future__ import annotations

import random
from pathlib import Path

POSITIVE = ["great", "lovely", "superb", "wonderful", "excellent", "delightful", "brilliant"]
NEGATIVE = ["awful", "boring", "terrible", "dreadful", "horrible", "dull", "clumsy"]
NOUNS = ["film", "movie", "story", "plot", "acting", "script", "ending", "cast"]


def toy_sentence(rng: random.Random, label: str) -> str:
    words = POSITIVE if label == "positive" else NEGATIVE
    return f"the {rng.choice(NOUNS)} was {rng.choice(words)} and {rng.choice(words)}"


def toy_corpus(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        rows.append({"id": f"row-{i}", "text": toy_sentence(rng, label), "gold": label})
    return rows


def _train_tokenizer(texts: list[str], encoder: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<unk>", "<pad>", "<eos>", "[CLS]", "[SEP]", "[MASK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    if encoder:  # [CLS] text [SEP], as BERT's: the classification head reads the first token
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<eos>",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _prompt_language(rng: random.Random, n: int) -> list[str]:
    """Few-shot prompts in the project's own prompt format, for the tiny LLM to learn."""
    from freeal_ray.prompts import classification_prompt
    from freeal_ray.task import get_preset

    task = get_preset("sentiment")
    docs = []
    for _ in range(n):
        shots = [(toy_sentence(rng, lab), lab) for lab in rng.choices(task.labels, k=3)]
        label = rng.choice(task.labels)
        docs.append(classification_prompt(task, shots, toy_sentence(rng, label)) + " " + label)
    return docs


def build_tiny_llm(folder: Path, train_steps: int = 150) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    rng = random.Random(0)
    docs = _prompt_language(rng, 400)
    tokenizer = _train_tokenizer(docs)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,  # head_dim 64: vLLM's CPU attention has no kernel for smaller heads
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(train_steps):
        batch = tokenizer(rng.sample(docs, 16), return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    model.save_pretrained(folder)
    tokenizer.chat_template = TINY_CHAT_TEMPLATE  # so chat prompt styles can run on it too
    tokenizer.save_pretrained(folder)
    return folder


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)


def build_tiny_encoder(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    rng = random.Random(1)
    texts = [toy_sentence(rng, rng.choice(["positive", "negative"])) for _ in range(200)]
    tokenizer = _train_tokenizer(texts, encoder=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
