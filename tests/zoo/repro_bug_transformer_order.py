# Classes Enc copied unchanged from shared/reviews/repro/bug_transformer_order.py; only its imports (less vglib) and these class definitions, not the script's vglib calls.
import torch
from torch import nn


class Enc(nn.Module):
    def __init__(self, vocab=1000, d=64, layers=1, classes=5):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, 4, 128, dropout=0.0, batch_first=True), layers,
            enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, tok):
        return self.head(self.enc(self.emb(tok)).mean(1))
