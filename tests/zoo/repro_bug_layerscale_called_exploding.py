# Classes Block, Net copied unchanged from shared/reviews/repro/bug_layerscale_called_exploding.py; only its imports (less vglib) and these class definitions, not the script's vglib calls.
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d, init=1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.gamma = nn.Parameter(init * torch.ones(d))  # LayerScale

    def forward(self, x):
        return x + self.gamma * self.fc2(F.gelu(self.fc1(self.norm(x))))


class Net(nn.Module):
    def __init__(self, init):
        super().__init__()
        self.stem = nn.Linear(16, 64)
        self.blocks = nn.Sequential(*[Block(64, init) for _ in range(6)])
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))
