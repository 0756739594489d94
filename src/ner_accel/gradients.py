"""The step's gradients before the optimizer: clipping, and on a CPU the word embeddings' gradient and update as rows."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch.nn.utils import clip_grads_with_norm_, get_total_norm


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
    - a hook before each optimizer step applies AdamW to the rows that have ever had a gradient (their moments are
      not zero) with the fused kernel AdamW itself runs. Every other row gets what AdamW does to a row whose
      moments and gradient are zero, the weight-decay factor alone, but late: the step's factor is owed, and a row
      is paid all it owes, one multiplication per step in order, when a batch looks it up, before any evaluation
      and before its weights are saved (`settle`). Each weight meets the same float32 multiplications as under
      the dense update, so it comes out bit for bit the same, and no step reads and writes the whole matrix.
      The optimizer's state keeps its usual form, so checkpoints and resuming are unchanged (a resumed run finds
      the trained rows in the moments).
    """

    def __init__(self, accelerator: Accelerator, model: torch.nn.Module, embedding_rows: bool) -> None:
        self.accelerator, self.model = accelerator, model
        embedding = accelerator.unwrap_model(model).get_input_embeddings()
        embedding.sparse = embedding_rows  # the backward nn.Embedding computes: the touched rows, or the matrix
        self.weight = embedding.weight if embedding_rows else None
        self.rows: torch.Tensor | None = None  # this step's touched rows (sorted) and their gradient
        self.values: torch.Tensor | None = None
        self.trained: torch.Tensor | None = None  # (vocabulary,) bool: rows whose moments are not zero
        self.owed: list[float] = []  # the decay factors of the steps since the matrix was last settled
        if embedding_rows:
            self.paid = torch.zeros(len(self.weight), dtype=torch.long)  # how many of them each row has had
            embedding.register_forward_pre_hook(self._before_lookup)
            embedding.register_state_dict_pre_hook(lambda *_: self.settle())
            embedding.register_load_state_dict_pre_hook(self._before_load)

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
            getattr(optimizer, "optimizer", optimizer).register_step_pre_hook(self.update_embedding)

    @torch.no_grad()
    def update_embedding(self, optimizer: torch.optim.Optimizer, *_) -> None:
        """AdamW on the word-embedding matrix from this step's rows, as the fused dense update would do it."""
        if self.values is None:
            return
        weight = self.weight
        # Looked up each step, not kept: load_state_dict (a resume) replaces the group dicts the scheduler updates.
        (group,) = [g for g in optimizer.param_groups if any(p is weight for p in g["params"])]
        state = optimizer.state[weight]
        if not state:  # as AdamW creates it (fused), so checkpoints hold the same
            state.update(
                step=torch.zeros((), dtype=torch.float32, device=weight.device),
                exp_avg=torch.zeros_like(weight),
                exp_avg_sq=torch.zeros_like(weight),
            )
        if self.trained is None:  # the first step of this process: rows trained before a resume have moments
            self.trained = state["exp_avg_sq"].ne(0).any(dim=1) | state["exp_avg"].ne(0).any(dim=1)
        self.pay(self.rows)  # done when the batch looked them up; here for a gradient no forward made
        self.trained[self.rows] = True
        trained = self.trained.nonzero().squeeze(1)
        grad = self.values.new_zeros(len(trained), weight.shape[1])
        grad[torch.searchsorted(trained, self.rows)] = self.values
        params, exp_avg, exp_avg_sq = (
            t.index_select(0, trained) for t in (weight, state["exp_avg"], state["exp_avg_sq"])
        )
        state["step"] += 1
        beta1, beta2 = group["betas"]
        torch._fused_adamw_(
            [params], [grad], [exp_avg], [exp_avg_sq], [], [state["step"]],
            amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
            eps=group["eps"], maximize=False,
        )  # fmt: skip
        if group["weight_decay"]:  # AdamW on a row with zero moments and gradient; paid when the row is next read
            self.owed.append(1 - group["lr"] * group["weight_decay"])
        weight.index_copy_(0, trained, params)
        state["exp_avg"].index_copy_(0, trained, exp_avg)
        state["exp_avg_sq"].index_copy_(0, trained, exp_avg_sq)
        self.values = None

    def _before_lookup(self, _embedding, inputs) -> None:
        """A training forward reads the rows its batch looks up; anything else (an evaluation) may read any row."""
        if torch.is_grad_enabled():
            self.pay(inputs[0].flatten().unique())
        else:
            self.settle()

    def _before_load(self, *_) -> None:
        """New weights (a resume, --load-best) owe nothing; the moments say anew which rows are trained."""
        self.owed.clear()
        self.paid.zero_()
        self.trained = None

    @torch.no_grad()
    def pay(self, rows: torch.Tensor, block: int = 1024) -> None:
        """Bring `rows` up to date: each untrained one gets the decay factors it has not had yet, in step order."""
        if not self.owed:
            return
        rows = rows[self.paid[rows] < len(self.owed)]
        if self.trained is not None:
            rows = rows[~self.trained[rows]]  # trained rows get AdamW, decay included, every step
        for start in self.paid[rows].unique().tolist():
            for chunk in rows[self.paid[rows] == start].split(block):  # a block stays in cache through the factors
                values = self.weight.index_select(0, chunk)
                for factor in self.owed[start:]:
                    values.mul_(factor)
                self.weight.index_copy_(0, chunk, values)
        self.paid[rows] = len(self.owed)

    def settle(self) -> None:
        """Pay every row what it owes: the whole matrix as the dense update would have left it."""
        if self.owed:
            self.pay(torch.arange(len(self.weight)))
            self.owed.clear()
            self.paid.zero_()
