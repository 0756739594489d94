"""The step's gradients before the optimizer: clipping, and on a CPU the word embeddings' gradient as rows."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch.nn.utils import clip_grads_with_norm_, get_total_norm


def embedding_rows_apply(accelerator: Accelerator, model: torch.nn.Module) -> bool:
    """Whether this run keeps the word embeddings' gradient as rows: one CPU process, trained embeddings, no fp16.

    One process only: DDP and FSDP all-reduce dense gradients. Not under fp16, whose loss scaler unscales the
    gradients inside the Accelerator's clipping. On a GPU the dense gradient costs little (a cached, fast fill).
    """
    return (
        accelerator.device.type == "cpu"
        and accelerator.distributed_type == DistributedType.NO
        and accelerator.mixed_precision != "fp16"
        and accelerator.unwrap_model(model).get_input_embeddings().weight.requires_grad
    )


class StepGradients:
    """Clips the step's gradients and leaves dense ones for fused AdamW.

    With `embedding_rows` the word-embedding matrix's backward is sparse (the rows the step's tokens touched) and
    its dense gradient lives in one buffer kept between steps. A 250k-token vocabulary makes that matrix most of the
    model (96M of multilingual-e5-small's 118M parameters) while a batch touches a few hundred rows: the dense
    backward allocates and zero-fills 384 MB every step, and clipping reads and scales all of it. Here the norm and
    the clip use the touched rows, which are written into the buffer after zeroing the previous step's rows. The
    gradient AdamW reads is the dense backward's, up to the order of floating-point sums over repeated tokens.
    """

    def __init__(self, accelerator: Accelerator, model: torch.nn.Module, embedding_rows: bool) -> None:
        self.accelerator, self.model = accelerator, model
        embedding = accelerator.unwrap_model(model).get_input_embeddings()
        embedding.sparse = embedding_rows  # the backward nn.Embedding computes: the touched rows, or the matrix
        self.embedding = embedding if embedding_rows else None
        if embedding_rows:
            self.buffer = torch.zeros_like(embedding.weight)
            self.rows: torch.Tensor | None = None  # the rows of the buffer the last step wrote

    def clip(self, max_norm: float) -> None:
        """Scale every gradient so their joint L2 norm is at most max_norm (0: no clipping)."""
        if self.embedding is None:
            if max_norm > 0:
                self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
            return
        weight = self.embedding.weight
        rows = weight.grad.coalesce()  # repeated tokens summed into one row each
        indices, values = rows.indices()[0], rows.values()
        others = [p for p in self.model.parameters() if p.grad is not None and p is not weight]
        if max_norm > 0:
            norms = torch.stack([get_total_norm([p.grad for p in others]), torch.linalg.vector_norm(values)])
            total_norm = torch.linalg.vector_norm(norms)
            clip_grads_with_norm_(others, max_norm, total_norm)
            # the same factor clip_grads_with_norm_ applies
            values = values * torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
        if self.rows is not None:
            self.buffer.index_fill_(0, self.rows, 0.0)
        self.buffer.index_copy_(0, indices, values)
        weight.grad, self.rows = self.buffer, indices
