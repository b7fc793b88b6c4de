# Classes Net copied unchanged from shared/reviews/repro/bug_shared_activation.py; only its imports (less vglib) and these class definitions, not the script's vglib calls.
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(8, 32), nn.Linear(32, 32), nn.Linear(32, 1)
        self.act = nn.ReLU()  # one instance, used twice

    def forward(self, x):
        return self.l3(self.act(self.l2(self.act(self.l1(x)) * 10.0)))  # x10: the two calls differ a lot
