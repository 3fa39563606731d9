"""Training losses beyond plain cross-entropy, shared by the classification modules.

* ``kd_loss``: knowledge distillation from soft labels (Hinton, Vinyals & Dean 2015,
  "Distilling the Knowledge in a Neural Network"). With the teacher being an earlier run
  of the same model this is self-knowledge distillation.
* ``label_description_contrastive``: the auxiliary loss of multi-task training with label
  descriptions: each example's embedding must be closer to the embedding of its own
  label's description than to the other labels' (InfoNCE, van den Oord et al. 2018, with
  cosine similarity and a temperature as in SimCLR, Chen et al. 2020).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bertlab.core.errors import BertlabError

# log(0) would make the tempered teacher -inf and the KL NaN; a floor this low changes a
# probability-1 teacher by ~1e-12 and keeps zero-probability classes out of the way.
PROB_FLOOR = 1e-12


def _positive(value, what: str, hint: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise BertlabError(f"{what} must be a finite number > 0, got {value}; {hint}")
    return value


def tempered_teacher_log_probs(teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(log(p) / T): the teacher's distribution at temperature T, from its T=1 probabilities.

    A teacher dump holds p = softmax(z_t). Since log p = z_t − logsumexp(z_t), and softmax
    ignores a per-row constant, softmax(log p / T) = softmax(z_t / T) exactly, without
    needing the teacher's logits.
    """
    return F.log_softmax(teacher_probs.clamp_min(PROB_FLOOR).log() / temperature, dim=-1)


def kd_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """α · T² · KL(p_t^T ‖ p_s^T) + (1 − α) · CE(z_s, y)  (Hinton et al. 2015).

    ``student_logits`` [B, C]; ``teacher_probs`` [B, C], the teacher's probabilities at
    T = 1 (what a soft-label dump writes), tempered with ``tempered_teacher_log_probs``;
    ``labels`` [B] (−100 is ignored by the CE term only). p_s^T = softmax(z_s / T). The KL
    is summed over classes and averaged over the batch; the T² factor keeps the soft
    term's gradients on the same scale as the hard term's as T changes (Hinton §2).
    """
    temperature, alpha = _positive(temperature, "distillation temperature", "1 to 4 is usual"), float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise BertlabError(f"distillation alpha (the weight of the soft-label term) must be in [0, 1], got {alpha}")
    hard = F.cross_entropy(student_logits, labels)
    if alpha == 0.0:
        return hard
    # float32 at least: the probability floor underflows to 0 in half precision.
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    teacher = tempered_teacher_log_probs(teacher_probs.to(dtype), temperature)
    student = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    soft = F.kl_div(student, teacher, reduction="batchmean", log_target=True)
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def label_description_contrastive(
    sample_emb: torch.Tensor,
    label_emb: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
    sample_negatives: bool = False,
) -> torch.Tensor:
    """InfoNCE that pulls each example towards its own label's description embedding.

    With s(a, b) = cos(a, b) / τ, x_i = ``sample_emb[i]`` ([B, D]), e_c = ``label_emb[c]``
    ([C, D]) and y_i = ``labels[i]``, the loss is the batch mean of

        ℓ_i = −s(x_i, e_{y_i}) + log( Σ_c exp s(x_i, e_c)  +  N_i ),

    i.e. cross-entropy over the C label descriptions, whose logits are the scaled cosines.
    The only positive is the example's own description. N_i = 0 by default; with
    ``sample_negatives=True``, N_i = Σ_{j : y_j ≠ y_i} exp s(x_i, x_j): the other examples in
    the batch *of a different label* are extra negatives. Examples of the same label are
    neither positive nor negative, and an example is never compared with itself.
    """
    temperature = _positive(temperature, "contrastive temperature", "0.05 to 0.1 is usual")
    x = F.normalize(sample_emb, dim=-1)
    e = F.normalize(label_emb, dim=-1)
    logits = x @ e.T / temperature  # [B, C]
    if not sample_negatives:
        return F.cross_entropy(logits, labels)
    between = x @ x.T / temperature  # [B, B]
    different = labels.unsqueeze(0) != labels.unsqueeze(1)  # excludes i == j and same-label pairs
    between = between.masked_fill(~different, float("-inf"))
    positive = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
    log_denominator = torch.logsumexp(torch.cat([logits, between], dim=1), dim=1)
    return (log_denominator - positive).mean()
