"""Important-token labels by the buffer rule of Gu et al. 2020 ("Train No Evil", §3.1).

Per labelled sentence s = w_1 … w_n with gold label y, using the task classifier Model_0:

* only sentences that Model_0 classifies correctly are labelled (the others get ``None``);
* a buffer s′ starts empty; the words are visited in order, and the buffer is never reset;
* w_i is appended and scored: when P(y | s) − P(y | s′ w_i) < δ (0.01 in the authors' code), w_i is
  *important* and is taken out of the buffer again, so that later words must earn their place;
  otherwise it stays in the buffer.

The test is signed and one-sided, as in the paper (S(w_i) = P(y | s) − P(y | s′ w_i)) and in the
authors' ``data/sc_mask_gen.py`` (``origin_score - mask_sens_score[gold] < threshold``): a prefix that
pushes P(y) *above* P(y | s) makes its last word important. (SM seeds its buffer with the first token
and scores it before popping; that is the same as appending w_1 to an empty buffer.)

Units are whole words, bertlab's documented unit, where the authors' code uses WordPiece tokens: a
run of tokens with the same word id (WordPiece ``##`` pieces join the word before them; a tokenizer
without continuation pieces, e.g. a character vocabulary, makes every token a word). All pieces of a
word get its label.

``buffer_rule_labels`` is the batched form: a pool of sentences steps together (a finished sentence
makes room for the next, so forwards stay full), and every step scores the current candidate s′ w_t of
every sentence in the pool, sorted by length and ``batch_size`` rows a forward (little padding).
``naive_buffer_rule_labels`` is the literal per-sentence, per-prefix loop, kept as the
reference the tests and ``benchmarks/selective_scoring.py`` compare against. Both take
``prob_fn(input_ids, attention_mask) -> [batch, classes]`` probabilities (``task_scorer.classifier_probs``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

ProbFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def word_runs(word_ids: Sequence[int]) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of equal word ids; positions with a negative id belong to no word."""
    runs, start = [], None
    for i, w in enumerate(word_ids):
        if start is not None and (w < 0 or w != word_ids[start]):
            runs.append((start, i))
            start = None
        if start is None and w >= 0:
            start = i
    if start is not None:
        runs.append((start, len(word_ids)))
    return runs


def continuation_table(tokenizer) -> np.ndarray:
    """Per vocabulary id: is it a WordPiece ``##`` continuation (which joins the word before it)?"""
    return np.array([p.startswith("##") for p in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))])


def continuation_word_ids(ids: Sequence[int], is_continuation: np.ndarray) -> list[int]:
    """Word ids of content tokens (no specials): a ``##`` piece joins the word before it."""
    out, word = [], -1
    for i, t in enumerate(ids):
        if i == 0 or not is_continuation[int(t)]:
            word += 1
        out.append(word)
    return out


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[r, : len(row)] = 1
    return ids, mask


class _Template:
    """``prefix + tokens + suffix`` (e.g. [CLS] … [SEP]) and padding, for the classifier's inputs."""

    def __init__(self, prefix: Sequence[int], suffix: Sequence[int], pad_id: int):
        self.prefix, self.suffix, self.pad_id = list(prefix), list(suffix), pad_id

    def probs(self, prob_fn: ProbFn, rows: list[list[int]]) -> torch.Tensor:
        ids, mask = _pad([self.prefix + r + self.suffix for r in rows], self.pad_id)
        return prob_fn(ids, mask).float()


def is_important(p_sentence: float, p_candidate: float, delta: float) -> bool:
    """Gu et al.'s test: P(y | s) − P(y | s′ w_i) < δ, signed (an overshoot of P(y | s) is important)."""
    return p_sentence - p_candidate < delta


def _check(sentences, words, gold, delta) -> None:
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not len(sentences) == len(words) == len(gold):
        raise ValueError("sentences, words and gold need one entry per sentence")


@torch.inference_mode()
def buffer_rule_labels(
    prob_fn: ProbFn,
    sentences: Sequence[Sequence[int]],
    words: Sequence[Sequence[int]],
    gold: Sequence[int],
    prefix: Sequence[int],
    suffix: Sequence[int],
    pad_id: int,
    delta: float = 0.01,
    batch_size: int = 64,
    pool_factor: int = 4,
) -> list[np.ndarray | None]:
    """Per sentence, an ``int8`` label per content token (1 = important), or ``None`` when Model_0
    misclassifies it. ``sentences`` hold content token ids (no specials), ``words`` a word id per token;
    ``pool_factor × batch_size`` sentences are labelled at a time."""
    _check(sentences, words, gold, delta)
    template = _Template(prefix, suffix, pad_id)
    units = [word_runs(w) for w in words]
    out: list[np.ndarray | None] = [None] * len(sentences)
    order = sorted((i for i in range(len(sentences)) if units[i]), key=lambda i: len(sentences[i]))
    target: dict[int, float] = {}
    for lo in range(0, len(order), batch_size):  # P(y | s), similar lengths together
        chunk = order[lo : lo + batch_size]
        p = template.probs(prob_fn, [list(sentences[i]) for i in chunk])
        for r, i in enumerate(chunk):
            if int(p[r].argmax()) == int(gold[i]):
                target[i] = float(p[r, int(gold[i])])
    # continuous batching: a pool of sentences steps together, a finished one makes room for the next, and
    # each step's candidates go through Model_0 sorted by length, ``batch_size`` rows a forward
    queue = [i for i in order if i in target][::-1]
    step: dict[int, int] = {}
    buffers: dict[int, list[int]] = {}
    while queue or step:
        while queue and len(step) < pool_factor * batch_size:
            i = queue.pop()
            step[i], buffers[i], out[i] = 0, [], np.zeros(len(sentences[i]), dtype=np.int8)
        candidates = sorted(step, key=lambda i: len(buffers[i]) + units[i][step[i]][1] - units[i][step[i]][0])
        for lo in range(0, len(candidates), batch_size):
            chunk = candidates[lo : lo + batch_size]
            pieces = [list(sentences[i][slice(*units[i][step[i]])]) for i in chunk]
            p = template.probs(prob_fn, [buffers[i] + piece for i, piece in zip(chunk, pieces)])
            got = p[torch.arange(len(chunk)), torch.tensor([int(gold[i]) for i in chunk])]
            for i, piece, prob in zip(chunk, pieces, got.tolist()):
                if is_important(target[i], prob, delta):
                    out[i][slice(*units[i][step[i]])] = 1
                else:
                    buffers[i].extend(piece)
                step[i] += 1
                if step[i] == len(units[i]):
                    del step[i], buffers[i]
    return out


@torch.inference_mode()
def naive_buffer_rule_labels(
    prob_fn: ProbFn,
    sentences: Sequence[Sequence[int]],
    words: Sequence[Sequence[int]],
    gold: Sequence[int],
    prefix: Sequence[int],
    suffix: Sequence[int],
    pad_id: int,
    delta: float = 0.01,
) -> list[np.ndarray | None]:
    """The reference: one forward per sentence and per candidate prefix, exactly as the rule reads."""
    _check(sentences, words, gold, delta)
    template = _Template(prefix, suffix, pad_id)
    out: list[np.ndarray | None] = []
    for ids, word_ids, y in zip(sentences, words, gold):
        units = word_runs(word_ids)
        if not units:
            out.append(None)
            continue
        p_full = template.probs(prob_fn, [list(ids)])[0]
        if int(p_full.argmax()) != int(y):
            out.append(None)
            continue
        labels, buffer = np.zeros(len(ids), dtype=np.int8), []
        for start, end in units:
            candidate = buffer + list(ids[start:end])
            p = template.probs(prob_fn, [candidate])[0]
            if is_important(float(p_full[y]), float(p[y]), delta):
                labels[start:end] = 1
            else:
                buffer = candidate
        out.append(labels)
    return out
