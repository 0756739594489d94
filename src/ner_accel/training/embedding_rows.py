"""AdamW on the word-embedding matrix by rows (one CPU process): bit for bit the fused dense update, at the cost of
the rows a step changes rather than of the whole 250k-row matrix."""

from __future__ import annotations

import torch


class EmbeddingRows:
    """The word-embedding matrix's AdamW update from a gradient that comes as rows (see gradients.StepGradients).

    - Rows that have had a gradient (trained: their moments are not zero) change every step. Their weights and
      moments are kept packed side by side, so AdamW's own fused kernel updates them in place; the matrix and the
      optimizer's moments hold them again when something reads them (a lookup, an evaluation, a save).
    - Every other row gets what AdamW gives a row whose moments and gradient are zero, the weight-decay factor alone,
      but owed: the step's factor goes on a list, and a row is paid all it owes, one float32 multiplication per step
      in step order, when it is read. The same multiplications in the same order give the same bits.
    Hooks keep every reader exact: a training forward first brings the rows its batch looks up up to date, an
    evaluation or the model's `state_dict` the whole matrix, the optimizer's `state_dict` the moments; a load of
    either forgets what is packed or owed. The optimizer's state keeps its usual form, so checkpoints and resuming
    are unchanged (a resumed process finds the trained rows in the moments).
    """

    def __init__(self, embedding: torch.nn.Embedding) -> None:
        self.weight = embedding.weight
        self.owed: list[float] = []  # the decay factors of the steps since the matrix was last settled
        self.paid = torch.zeros(len(self.weight), dtype=torch.long)  # how many of them each untrained row has had
        self.state: dict | None = None  # the optimizer's state of the matrix (step, exp_avg, exp_avg_sq)
        self.slot: torch.Tensor | None = None  # (vocabulary,): each trained row's place in the packed tensors, else -1
        self.order = torch.empty(0, dtype=torch.long)  # the vocabulary row at each place
        self.packed: list[torch.Tensor] = []  # weights, exp_avg, exp_avg_sq of the trained rows, place by place
        self.count = 0  # places in use (the tensors hold more, to grow without a copy each step)
        self.behind = False  # the matrix lags the packed weights (a step since they were last written back)
        embedding.register_forward_pre_hook(self._before_lookup)
        embedding.register_state_dict_pre_hook(lambda *_: self.settle())
        embedding.register_load_state_dict_pre_hook(lambda *_: self.forget())

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Keep the torch optimizer's own view of the matrix's moments exact when it is saved or loaded."""
        optimizer.register_state_dict_pre_hook(lambda _: self.flush())
        optimizer.register_load_state_dict_pre_hook(lambda *_: self.forget())

    @property
    def trained(self) -> torch.Tensor | None:
        """(vocabulary,) bool: the rows AdamW updates every step; None until the first step of this process."""
        return None if self.slot is None else self.slot >= 0

    @torch.no_grad()
    def step(self, optimizer: torch.optim.Optimizer, rows: torch.Tensor, values: torch.Tensor) -> None:
        """One AdamW step of `optimizer` from the gradient `values` of the sorted, distinct `rows` (zero elsewhere)."""
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
        if self.slot is None:  # the first step of this process: rows trained before a resume have moments
            self.state = state
            trained = state["exp_avg_sq"].ne(0).any(dim=1) | state["exp_avg"].ne(0).any(dim=1)
            self.slot = torch.full((len(weight),), -1, dtype=torch.long)
            self._add(trained.nonzero().squeeze(1))
        new = rows[self.slot[rows] < 0]
        self.pay(new)  # done when the batch looked them up; here for a gradient no forward made
        self._add(new)
        weights, exp_avg, exp_avg_sq = (t[: self.count] for t in self.packed)
        grad = values.new_zeros(weights.shape)
        grad[self.slot[rows]] = values
        state["step"] += 1
        beta1, beta2 = group["betas"]
        torch._fused_adamw_(
            [weights], [grad], [exp_avg], [exp_avg_sq], [], [state["step"]],
            amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
            eps=group["eps"], maximize=False,
        )  # fmt: skip
        self.behind = True
        if group["weight_decay"]:
            self.owed.append(1 - group["lr"] * group["weight_decay"])

    def _add(self, rows: torch.Tensor) -> None:
        """Give `rows` places: their weights from the matrix, their moments from the optimizer's (zero if new)."""
        end = self.count + len(rows)
        if end > len(self.order):  # grow by doubling: a copy now and then, not every step
            capacity = max(2 * len(self.order), end, 1024)
            self.order = torch.cat([self.order[: self.count], self.order.new_empty(capacity - self.count)])
            self.packed = [
                torch.cat([t[: self.count], self.weight.new_empty(capacity - self.count, self.weight.shape[1])])
                for t in self.packed or [self.weight[:0]] * 3
            ]
        self.order[self.count : end] = rows
        self.slot[rows] = torch.arange(self.count, end)
        for packed, source in zip(self.packed, (self.weight, self.state["exp_avg"], self.state["exp_avg_sq"])):
            packed[self.count : end] = source.index_select(0, rows)
        self.count = end

    def _before_lookup(self, _embedding, inputs) -> None:
        """A training forward reads the rows its batch looks up; anything else (an evaluation) may read any row."""
        if not torch.is_grad_enabled():
            self.settle()
            return
        rows = inputs[0].flatten().unique()
        self.pay(rows)
        if self.slot is not None:
            rows = rows[self.slot[rows] >= 0]
            with torch.no_grad():
                self.weight.index_copy_(0, rows, self.packed[0].index_select(0, self.slot[rows]))

    @torch.no_grad()
    def pay(self, rows: torch.Tensor, block: int = 1024) -> None:
        """Bring untrained `rows` up to date: each gets the decay factors it has not had yet, in step order."""
        if not self.owed:
            return
        rows = rows[self.paid[rows] < len(self.owed)]
        if self.slot is not None:
            rows = rows[self.slot[rows] < 0]  # trained rows get AdamW, decay included, every step
        for start in self.paid[rows].unique().tolist():
            for chunk in rows[self.paid[rows] == start].split(block):  # a block stays in cache through the factors
                values = self.weight.index_select(0, chunk)
                for factor in self.owed[start:]:
                    values.mul_(factor)
                self.weight.index_copy_(0, chunk, values)
        self.paid[rows] = len(self.owed)

    @torch.no_grad()
    def settle(self) -> None:
        """The whole matrix as the dense update would have left it: every row paid, the trained rows written back."""
        if self.owed:
            self.pay(torch.arange(len(self.weight)))
            self.owed.clear()
            self.paid.zero_()
        if self.behind:  # once after training steps, not for every batch of an evaluation
            self.weight.index_copy_(0, self.order[: self.count], self.packed[0][: self.count])
            self.behind = False

    @torch.no_grad()
    def flush(self) -> None:
        """The optimizer's moments of the matrix as the dense update would have left them."""
        if self.count:
            for name, packed in zip(("exp_avg", "exp_avg_sq"), self.packed[1:]):
                self.state[name].index_copy_(0, self.order[: self.count], packed[: self.count])

    def forget(self) -> None:
        """Before a load: write everything back, then start again from what is loaded (nothing owed or packed)."""
        self.settle()
        self.flush()
        self.state, self.slot, self.packed, self.count = None, None, [], 0
        self.order = torch.empty(0, dtype=torch.long)
