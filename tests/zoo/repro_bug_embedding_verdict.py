# Classes LM copied unchanged from shared/reviews/repro/bug_embedding_verdict.py; only its imports (less vglib) and these class definitions, not the script's vglib calls.
import torch
from torch import nn
import torch.nn.functional as F


class LM(nn.Module):
    def __init__(self, vocab, d=64, hidden=128, classes=5):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.rnn = nn.LSTM(d, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, tok):
        h, _ = self.rnn(self.emb(tok))
        return self.head(h[:, -1])
