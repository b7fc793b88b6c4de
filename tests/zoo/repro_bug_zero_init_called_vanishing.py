# Classes Block, LoRALinear, LoRAModel copied unchanged from shared/reviews/repro/bug_zero_init_called_vanishing.py; only its imports (less vglib) and these class definitions, not the script's vglib calls.
import math
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        nn.init.zeros_(self.bn2.weight)  # zero_init_residual

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class LoRALinear(nn.Module):
    def __init__(self, base, r=4):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(r, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + x @ self.A.t() @ self.B.t()


class LoRAModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = (LoRALinear(nn.Linear(16, 32)), LoRALinear(nn.Linear(32, 32)),
                                     LoRALinear(nn.Linear(32, 3)))

    def forward(self, x):
        return self.l3(torch.relu(self.l2(torch.relu(self.l1(x)))))
