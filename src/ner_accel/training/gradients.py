"""The step's gradients before the optimizer: clipping, and on a CPU the word embeddings' gradient and update as rows."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from .embedding_rows import EmbeddingRows


def embedding_rows_apply(accelerator: Accelerator, model: torch.nn.Module) -> bool:
    """Whether this run keeps the word embeddings' gradient as rows: one CPU process, trained embeddings, no fp16.

    One process only: DDP and FSDP all-reduce dense gradients. Not under fp16, whose loss scaler unscales the
    gradients inside the Accelerator's clipping. On a GPU the dense gradient and update cost little.
    """
    return (
        accelerator.device.type == "cpu"
        and accelerator.distributed_type == DistributedType.NO
        and accelerator.mixed_precision != "fp16"
        and accelerator.unwrap_model(model).get_input_embeddings().weight.requires_grad
    )


class StepGradients:
    """Clips the step's gradients; with `embedding_rows`, computes and applies the word embeddings' by rows.

    A 250k-token vocabulary makes the word-embedding matrix most of the model (96M of multilingual-e5-small's 118M
    parameters), while a batch touches a few hundred of its rows. Done densely, each step allocates and zero-fills a
    384 MB gradient, clipping reads and scales all of it, and AdamW reads and writes the matrix, its gradient and
    both moments. With `embedding_rows`:
    - the embedding's backward is sparse (`nn.Embedding.sparse`): the touched rows only;
    - clipping takes their norm and scales them (the other gradients as the Accelerator would);
    - a hook before each optimizer step hands them to `EmbeddingRows`, which updates the matrix as the fused dense
      AdamW would, bit for bit, by rows (embedding_rows.py).
    """

    def __init__(self, accelerator: Accelerator, model: torch.nn.Module, embedding_rows: bool) -> None:
        self.accelerator, self.model = accelerator, model
        embedding = accelerator.unwrap_model(model).get_input_embeddings()
        embedding.sparse = embedding_rows  # the backward nn.Embedding computes: the touched rows, or the matrix
        self.embedding_rows = EmbeddingRows(embedding) if embedding_rows else None
        self.rows: torch.Tensor | None = None  # this step's touched rows (sorted) and their gradient
        self.values: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor | None:
        """The word-embedding matrix when its gradient comes as rows, else None."""
        return None if self.embedding_rows is None else self.embedding_rows.weight

    def clip(self, max_norm: float) -> None:
        """Scale every gradient so their joint L2 norm is at most max_norm (0: no clipping).

        With embedding rows, also takes the step's rows for the optimizer's update: call it every step."""
        if self.weight is None:
            if max_norm > 0:
                self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
            return
        rows = self.weight.grad.coalesce()  # repeated tokens summed into one row each
        self.weight.grad = None  # the optimizer's own step leaves the matrix to update_embedding
        self.rows, self.values = rows.indices()[0], rows.values()
        if max_norm > 0:
            others = [p for p in self.model.parameters() if p.grad is not None]
            total_norm = torch.linalg.vector_norm(
                torch.stack([get_total_norm([p.grad for p in others]), torch.linalg.vector_norm(self.values)])
            )
            clip_grads_with_norm_(others, max_norm, total_norm)
            self.values = self.values * torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)  # its factor

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Have `optimizer` update the word-embedding matrix by rows before each of its steps."""
        if self.weight is not None:  # on the torch optimizer: Accelerate's wrapper steps it inside its own step
            optimizer = getattr(optimizer, "optimizer", optimizer)
            optimizer.register_step_pre_hook(self.update_embedding)
            self.embedding_rows.attach(optimizer)

    @torch.no_grad()
    def update_embedding(self, optimizer: torch.optim.Optimizer, *_) -> None:
        """AdamW on the word-embedding matrix from this step's rows, as the fused dense update would do it."""
        if self.values is None:
            return
        self.embedding_rows.step(optimizer, self.rows, self.values)
        self.values = None
