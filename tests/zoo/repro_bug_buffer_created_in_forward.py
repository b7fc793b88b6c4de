# Classes Rotary copied unchanged from shared/reviews/repro/bug_buffer_created_in_forward.py; only its imports (less vglib) and these class definitions, not the script's vglib calls.
import torch
from torch import nn


class Rotary(nn.Module):
    def __init__(self, grow_existing):
        super().__init__()
        self.q, self.head = nn.Linear(16, 16), nn.Linear(16, 3)
        if grow_existing:
            self.register_buffer("cos", torch.ones(4, 1), persistent=False)

    def forward(self, x):
        t = x.shape[1]
        if getattr(self, "cos", None) is None or self.cos.shape[0] < t:
            self.register_buffer("cos", torch.cos(torch.arange(t).float())[:, None], persistent=False)
        return self.head((self.q(x) * self.cos[:t]).mean(1))
