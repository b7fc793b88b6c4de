# Classes DeepSigmoid copied unchanged from shared/reviews/repro/bug_root_param_first.py; only its imports (less vglib) and these class definitions, not the script's vglib calls.
import torch
from torch import nn


class DeepSigmoid(nn.Module):
    def __init__(self, temperature):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(16 if i == 0 else 64, 64) for i in range(20)])
        for l in self.layers:
            nn.init.normal_(l.weight, std=0.05)
        self.head = nn.Linear(64, 3)
        self.temperature = nn.Parameter(torch.ones(())) if temperature else None

    def forward(self, x):
        for l in self.layers:
            x = torch.sigmoid(l(x))
        out = self.head(x)
        return out / self.temperature if self.temperature is not None else out
