"""How often an answer as sure as this one was right, on voices the model never heard.

A softmax probability is not the chance of being right, and how far apart the two lie depends on
how unfamiliar the voice is: cross-validated on speakers it never heard, the bundled recipe is
under-confident; trained on two corpora and tested on the third, over-confident (README, *How sure
is sure?*). A checkpoint may carry such a table (`results/calibration.json`, written by
`python -m train calibration` from the per-clip answers of its recipe's cross-validation), and the
page then puts the answer's own row next to it.

The table bins the answers of every test clip by their top probability; per protocol (speakers or
a corpus never heard), over all test clips and per test corpus, and per test setting (audio alone,
audio + the clip's words; the clip's words alone are kept but not shown) it keeps how many answers
fell in each bin and how many were right.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

FILE = "results/calibration.json"
EDGES = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)  # top-probability bins; the last one includes 1.0
MIN_ANSWERS = 20  # a bin with fewer answers says nothing on the page
HUB_OPTIONS = ("revision", "cache_dir", "force_download", "token", "local_files_only")

# the page's modality -> the cross-validation setting that scored the same inputs
SETTINGS = {"audio": "audio", "both": "both"}  # words alone: acted scripts carry no emotion to calibrate
# What a protocol measured, in the page's words: over all its test clips, or, where the table has
# them, over one test corpus's. Pooled over corpora, the speaker-independent rows are mostly TESS's
# two voices, which the model recognises best; RAVDESS's actors are the voices most like a user's.
PROTOCOL_WORDS = {"speaker-independent": ("speakers it never heard", ("ravdess", "RAVDESS actors it never heard")),
                  "leave-one-corpus-out": ("a corpus it never heard", None)}
# ... and as a column or key of the machine-readable outputs (batch CSV, timeline, JSON)
PROTOCOL_KEYS = {"speaker-independent": "new_speakers", "leave-one-corpus-out": "new_corpus"}
CSV_COLUMNS = tuple(f"right_{key}" for key in PROTOCOL_KEYS.values())  # fraction right of answers as sure

log = logging.getLogger(__name__)


def bin_of(confidence: float, edges=EDGES) -> int:
    """Index of the bin holding `confidence` (the last bin holds 1.0 too)."""
    for i in range(len(edges) - 1):
        if confidence < edges[i + 1]:
            return i
    return len(edges) - 2


@dataclass
class Calibration:
    edges: tuple
    # protocol -> setting -> [{"answers": n, "right": k} per bin], over all test clips
    protocols: dict
    # protocol -> test corpus -> setting -> bins
    corpora: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        edges = tuple(float(e) for e in data["edges"])
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] != 0 or edges[-1] != 1:
            raise ValueError(f"calibration edges must rise from 0 to 1, got {edges}")
        corpora = data.get("corpora", {})
        tables = [(protocol, settings) for protocol, settings in data["protocols"].items()]
        tables += [(f"{protocol} / {corpus}", settings) for protocol, by in corpora.items() for corpus, settings in by.items()]
        for name, settings in tables:
            for setting, bins in settings.items():
                if len(bins) != len(edges) - 1 or any(not 0 <= b["right"] <= b["answers"] for b in bins):
                    raise ValueError(f"calibration {name} / {setting}: needs {len(edges) - 1} bins, "
                                     "each with 0 <= right <= answers")
        return cls(edges, data["protocols"], corpora)

    def accuracy(self, protocol: str, modality: str, confidence: float,
                 corpus: Optional[str] = None) -> Optional[tuple[float, int]]:
        """(fraction right, answers) of the bin of `confidence` (over all test clips, or those of
        `corpus`), or None where too few answers fell in it."""
        rows = self.corpora.get(protocol, {}).get(corpus, {}) if corpus else self.protocols.get(protocol, {})
        bins = rows.get(SETTINGS.get(modality, ""))
        if not bins:
            return None
        cell = bins[bin_of(confidence, self.edges)]
        if cell["answers"] < MIN_ANSWERS:
            return None
        return cell["right"] / cell["answers"], cell["answers"]

    def figures(self, modality: str, confidence: float) -> dict[str, dict]:
        """Per protocol of the table (by its PROTOCOL_KEYS name), how often answers as sure as
        `confidence` were right: {"right": fraction, "answers": n, "measured_on": words}. The
        speaker-independent figure is RAVDESS's unheard actors' where the table has them. Bins with
        too few answers are left out."""
        found = {}
        for protocol in self.protocols:
            key = next((k for prefix, k in PROTOCOL_KEYS.items() if protocol.startswith(prefix)), protocol)
            words, by_corpus = next((w for prefix, w in PROTOCOL_WORDS.items() if protocol.startswith(prefix)),
                                    (f"the {protocol} folds", None))
            corpus = None
            if by_corpus is not None and by_corpus[0] in self.corpora.get(protocol, {}):
                corpus, words = by_corpus
            cell = self.accuracy(protocol, modality, confidence, corpus)
            if cell is not None:
                key = protocol if key in found else key  # two tables of one kind keep their own names
                found[key] = {"right": cell[0], "answers": cell[1], "measured_on": words}
        return found

    def record(self, modality: str, confidence: float) -> Optional[dict]:
        """The machine-readable form of `sentence`: the answer's bin and its `figures`; None where
        the table has nothing for this answer."""
        figures = self.figures(modality, confidence)
        if not figures:
            return None
        return {"bin": self.bin_words(confidence), **{k: {**f, "right": round(f["right"], 4)} for k, f in figures.items()}}

    def sentence(self, modality: str, confidence: float) -> Optional[str]:
        """One sentence for the page, or None where the table has nothing for this answer."""
        figures = self.figures(modality, confidence).values()
        if not figures:
            return None
        parts = [f"{f['right']:.0%} of the time on {f['measured_on']} ({f['answers']} answers)" for f in figures]
        return (f"In the cross-validation of this checkpoint's recipe, answers as sure as this one "
                f"({self.bin_words(confidence)}) were right " + ", and ".join(parts)
                + ". A probability is not the chance of being right.")

    @staticmethod
    def columns(record: Optional[dict]) -> list[str]:
        """`record`'s fractions right in CSV_COLUMNS order ("" where it has none)."""
        record = record or {}
        return [f"{record[key]['right']:.4f}" if key in record else "" for key in PROTOCOL_KEYS.values()]

    def bin_words(self, confidence: float) -> str:
        i = bin_of(confidence, self.edges)
        low, high = self.edges[i], self.edges[i + 1]
        if i == 0:
            return f"below {high:.0%}"
        if i == len(self.edges) - 2:
            return f"{low:.0%} or more"
        return f"{low:.0%}–{high:.0%}"


def load_calibration(checkpoint: str, **hub_kwargs) -> Optional[Calibration]:
    """The calibration table a checkpoint folder (or Hub repo) carries; None if it has none, or
    if it cannot be read (the answers stand without it)."""
    path = Path(checkpoint).expanduser() / FILE
    try:
        if not Path(checkpoint).expanduser().is_dir():
            from huggingface_hub import hf_hub_download

            # the download options the model's own weights were fetched with (MSCNN_SPU_ATT._from_pretrained),
            # so that local_files_only keeps this read offline too
            path = Path(hf_hub_download(checkpoint, FILE, **{k: v for k, v in hub_kwargs.items() if k in HUB_OPTIONS}))
        if not path.is_file():
            return None
        return Calibration.from_dict(json.loads(path.read_text()))
    except Exception as err:  # offline, no such file on the Hub, a damaged table: no sentence, no failure
        log.info("no calibration table for %s: %s", checkpoint, err)
        return None
