"""Text corpora for the text branch: GoEmotions (Reddit comments), DailyDialog (everyday
conversation) and ISEAR (self-reported emotional situations), each read in its release layout.

Every loader takes ``split``: one of ``TEXT_SPLITS`` (train, dev, test) or None for everything in
the folder. Each corpus has its own deterministic way to make the three splits (see its loader),
so that texts used for training never reach a dev or test set. Emotions outside the four classes
are dropped and counted by their own name.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from train.records import LoadReport, Tally, TextSample

TEXT_SPLITS = ("train", "dev", "test")


def _check_split(corpus: str, split: str | None) -> None:
    if split is not None and split not in TEXT_SPLITS:
        raise ValueError(f"{corpus}: unknown split {split!r}; expected one of {', '.join(TEXT_SPLITS)}")


def _bucket(key: str, buckets: int) -> int:
    """A stable bucket for a key (SHA-256, unlike hash(), is the same in every process)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % buckets


# --------------------------------------------------------------------------------------------
# GoEmotions: {train,dev,test}.tsv with text<TAB>label ids<TAB>comment id; ids index labels.txt
# --------------------------------------------------------------------------------------------

GOEMOTIONS_LABELS = {"anger": "angry", "joy": "happy", "sadness": "sad", "neutral": "neutral"}


def load_goemotions(
    path: str | os.PathLike, *, split: str | None = None, labels_path: str | os.PathLike | None = None
) -> tuple[list[TextSample], LoadReport]:
    """GoEmotions TSV (Ekman-grouped ids by default). Keeps rows with exactly one id that maps.

    ``path`` is one TSV file, or a folder holding any of train.tsv, dev.tsv, test.tsv: ``split``
    picks one of them, None reads those present in that order. The release's own splits are used.
    Multi-label rows are dropped ("multi_label"), as are single labels outside the four classes.
    """
    _check_split("goemotions", split)
    path = Path(path)
    if path.is_dir():
        wanted = [split] if split else list(TEXT_SPLITS)
        tsv_files = [path / f"{name}.tsv" for name in wanted if (path / f"{name}.tsv").is_file()]
        if not tsv_files:
            raise FileNotFoundError(f"goemotions: no {' or '.join(f'{n}.tsv' for n in wanted)} in {path}")
    elif path.is_file():
        if split:
            raise ValueError(f"goemotions: {path} is one file; a split needs the folder of train/dev/test.tsv")
        tsv_files = [path]
    else:
        raise FileNotFoundError(f"goemotions: no such file or folder {path}")
    labels_path = Path(labels_path) if labels_path else tsv_files[0].parent / "labels.txt"
    if not labels_path.is_file():
        raise FileNotFoundError(f"goemotions: no {labels_path} (the names of the label ids)")
    label_names = [line.strip() for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    tally = Tally("goemotions")
    samples = []
    for tsv_file in tsv_files:
        with open(tsv_file, encoding="utf-8", newline="") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                ids = parts[1].split(",") if len(parts) >= 2 else []
                if not all(i.strip().isdigit() and int(i) < len(label_names) for i in ids) or not ids:
                    tally.drop("malformed_row")
                    continue
                if len(ids) != 1:
                    tally.drop("multi_label")
                    continue
                name = label_names[int(ids[0])]
                if name not in GOEMOTIONS_LABELS:
                    tally.drop(name)
                    continue
                tally.keep()
                samples.append(TextSample(text=parts[0], label=GOEMOTIONS_LABELS[name], corpus="goemotions"))
    return samples, tally.report()


# --------------------------------------------------------------------------------------------
# DailyDialog: <split>/dialogues_<split>.txt (utterances separated by __eou__, one dialogue a
#              line) and <split>/dialogues_emotion_<split>.txt (one emotion id per utterance)
# --------------------------------------------------------------------------------------------

DAILYDIALOG_EMOTIONS = {
    "0": "neutral", "1": "angry", "2": "disgust", "3": "fear", "4": "happy", "5": "sad", "6": "surprise",
}  # fmt: skip
_DETACHED_CLITIC = re.compile(r"(\w) ?[\u2019'] ?(s|re|ve|ll|d|m|t)\b", re.IGNORECASE)
_SPACE_BEFORE_PUNCTUATION = re.compile(r" +([,.!?;:])")


def _dailydialog_text(utterance: str) -> str:
    # The release is tokenised ("I ’ ll do it , thanks"); join the pieces as people write them
    # (and as Whisper transcribes them), so that "ll" does not become a word of its own.
    text = _DETACHED_CLITIC.sub(r"\1'\2", " ".join(utterance.split()))
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)


def _dailydialog_files(root: Path) -> dict[str, tuple[Path, Path]]:
    """Native split name -> (dialogues file, emotions file), in root or its subfolders."""
    found = {}
    for folder in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        for text_file in sorted(folder.glob("dialogues_*.txt")):
            name = text_file.stem.removeprefix("dialogues_")
            if name.startswith(("act", "emotion", "topic")):
                continue
            # the full release names its one file dialogues_text.txt + dialogues_emotion.txt
            emotion_file = folder / ("dialogues_emotion.txt" if name == "text" else f"dialogues_emotion_{name}.txt")
            if emotion_file.is_file():
                found[name] = (text_file, emotion_file)
    return found


def _read_dialogues(text_file: Path, emotion_file: Path) -> list[tuple[str, list[str], list[str]]]:
    """(dialogue line, utterances, emotion ids) per dialogue."""
    lines = text_file.read_text(encoding="utf-8").splitlines()
    emotions = emotion_file.read_text(encoding="utf-8").splitlines()
    dialogues = []
    for line, ids in zip(lines, emotions):
        utterances = [u.strip() for u in line.split("__eou__")]
        dialogues.append((line.strip(), [u for u in utterances if u], ids.split()))
    return dialogues


def load_dailydialog(path: str | os.PathLike, *, split: str | None = None) -> tuple[list[TextSample], LoadReport]:
    """DailyDialog utterances: 0 (no emotion) -> neutral, anger, happiness, sadness kept.

    ``path``: a folder with the release's split folders (train/, validation/, test/; any of them)
    or one split's folder. Splits: with the native train split present, train/dev/test are
    train/validation/test. Without it (its text is not in ../shared/data), train is validation and
    test is halved into dev and test by a hash of each dialogue's text, so a dialogue and its
    copies stay on one side. Dev and test drop dialogues that also occur in train
    ("dialogue_in_train", counted in utterances). A dialogue whose emotion ids do not match its
    utterances is dropped ("misaligned_dialogue", counted in utterances).
    """
    _check_split("dailydialog", split)
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"dailydialog: no such folder {root}")
    files = _dailydialog_files(root)
    if not files:
        raise FileNotFoundError(f"dailydialog: no dialogues_<split>.txt with dialogues_emotion_<split>.txt in {root}")
    read = {name: _read_dialogues(*pair) for name, pair in files.items()}
    if split is None:
        chosen = [d for name in sorted(read) for d in read[name]]
    else:
        chosen = _dailydialog_split(read, split)
    tally = Tally("dailydialog")
    if split in ("dev", "test"):
        train_lines = {line for line, _, _ in _dailydialog_split(read, "train")}
        leaked = [d for d in chosen if d[0] in train_lines]
        if leaked:
            tally.drop("dialogue_in_train", sum(len(u) for _, u, _ in leaked))
        chosen = [d for d in chosen if d[0] not in train_lines]
    samples = []
    for _, utterances, ids in chosen:
        if len(utterances) != len(ids):
            tally.drop("misaligned_dialogue", len(utterances))
            continue
        for utterance, emotion_id in zip(utterances, ids):
            emotion = DAILYDIALOG_EMOTIONS.get(emotion_id, f"code_{emotion_id}")
            if emotion not in ("angry", "happy", "sad", "neutral"):
                tally.drop(emotion)
                continue
            tally.keep()
            samples.append(TextSample(text=_dailydialog_text(utterance), label=emotion, corpus="dailydialog"))
    return samples, tally.report()


def _dailydialog_split(read: dict[str, list], split: str) -> list:
    if "train" in read:
        native = {"train": "train", "dev": "validation", "test": "test"}[split]
        if native not in read:
            raise FileNotFoundError(f"dailydialog: the {split} split needs the release's {native}/ folder")
        return read[native]
    if split == "train":
        if "validation" not in read:
            raise FileNotFoundError("dailydialog: the train split needs the release's train/ or validation/ folder")
        return read["validation"]
    if "test" not in read:
        raise FileNotFoundError(f"dailydialog: the {split} split needs the release's test/ folder")
    half = {"dev": 0, "test": 1}[split]
    return [d for d in read["test"] if _bucket(d[0], 2) == half]


# --------------------------------------------------------------------------------------------
# ISEAR: isear.csv, '|'-separated; SIT = the situation in the respondent's words, Field1 = emotion
# --------------------------------------------------------------------------------------------

ISEAR_LABELS = {"anger": "angry", "joy": "happy", "sadness": "sad"}  # no neutral in ISEAR
# Respondents who described nothing: "[ No response.]", "[ Never experienced.]", "None." ... A
# longer text that starts so ("I can't remember being truly angry. One situation ...") is kept.
_ISEAR_NON_ANSWER = re.compile(
    r"^(no (res?ponse|description|answer)|not applicable|(doesn't|does not) apply|nothing|none|"
    r"(i )?(do not|don't|can ?not|can't) "
    r"(know|remember|recall|think)|never (felt|experienced)|i have (never|not) (felt|experienced)|same as)\b",
    re.IGNORECASE,
)
_ISEAR_NON_ANSWER_WORDS = 12
# Each respondent wrote one situation per emotion: hash their ID into 10 buckets, 8 train, 1 dev, 1 test.
_ISEAR_BUCKETS = {"dev": {8}, "test": {9}, "train": set(range(8))}


def _isear_text(raw: str) -> str:
    # The release carries artefacts of an old conversion: "á" where a line broke, \" for quotes,
    # and brackets around texts the coders typed in; keep the respondent's words only.
    text = raw.replace("á", " ").replace('\\"', '"').replace("\\", '"')
    text = " ".join(text.split()).strip('" ')
    if text.startswith("[") and text.rstrip('"').endswith("]"):
        text = text.rstrip('"')[1:-1].strip()
    return text


def load_isear(path: str | os.PathLike, *, split: str | None = None) -> tuple[list[TextSample], LoadReport]:
    """ISEAR situations labelled joy -> happy, anger -> angry, sadness -> sad (no neutral).

    ``path``: isear.csv or its folder. Splits are by respondent (column ID; each wrote about
    every emotion): a hash of the ID puts 80 % of the respondents in train, 10 % in dev, 10 % in
    test, so no one's writing is both trained on and tested. Rows whose text says there is no
    situation ("[ No response.]") are dropped as "no_situation".
    """
    _check_split("isear", split)
    csv_path = Path(path)
    if csv_path.is_dir():
        csv_path = csv_path / "isear.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"isear: no such file {csv_path}")
    lines = csv_path.read_text(encoding="utf-8", errors="replace").splitlines()
    header = lines[0].split("|") if lines else []
    missing = [c for c in ("ID", "Field1", "SIT") if c not in header]
    if missing:
        raise ValueError(f"{csv_path}: missing columns {missing} in a '|'-separated header")
    id_at, emotion_at, text_at = header.index("ID"), header.index("Field1"), header.index("SIT")
    if text_at < max(id_at, emotion_at):
        raise ValueError(f"{csv_path}: expected SIT after ID and Field1, as in the release")
    tally = Tally("isear")
    samples = []
    for line in lines[1:]:
        fields = line.split("|")
        # Line breaks in SIT were written as more separators; SIT comes after ID and Field1.
        extra = len(fields) - len(header)
        if extra < 0:
            tally.drop("malformed_row")
            continue
        if split is not None and _bucket(f"isear:{fields[id_at]}", 10) not in _ISEAR_BUCKETS[split]:
            continue
        emotion = fields[emotion_at].strip()
        if emotion not in ISEAR_LABELS:
            tally.drop(emotion or "empty_label")
            continue
        text = _isear_text(" ".join(fields[text_at : text_at + 1 + extra]))
        if not text or (_ISEAR_NON_ANSWER.match(text) and len(text.split()) <= _ISEAR_NON_ANSWER_WORDS):
            tally.drop("no_situation")
            continue
        tally.keep()
        samples.append(TextSample(text=text, label=ISEAR_LABELS[emotion], corpus="isear"))
    return samples, tally.report()


TEXT_CORPORA = {"goemotions": load_goemotions, "dailydialog": load_dailydialog, "isear": load_isear}


def load_text_corpus(name: str, path: str | os.PathLike, *, split: str | None = None) -> tuple[list[TextSample], LoadReport]:
    """Load a text corpus by name ("goemotions", "dailydialog", "isear"), one split or all of it."""
    loader = TEXT_CORPORA.get(name.lower().replace("-", "").replace("_", ""))
    if loader is None:
        raise KeyError(f"unknown text corpus {name!r}; known: {', '.join(TEXT_CORPORA)}")
    return loader(path, split=split)
