# Classes Net copied unchanged from shared/reviews/repro/bug_rnn_time_vanishing_missed.py; only its imports (less vglib) and these class definitions, not the script's vglib calls.
import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.RNN(8, 32, batch_first=True), nn.Linear(32, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])
