"""Score a checkpoint on a corpus the way a user meets it, and say exactly what was measured.

What the model is given at test time decides what a figure means, so every figure carries a
protocol (what the model was given) and a data description (which corpus, split and items):

* a text corpus (GoEmotions, DailyDialog, ISEAR): its labelled texts alone, no audio;
* an audio corpus, audio only: the clips alone;
* an audio corpus with words: each clip with its own transcript (the corpus's, "own") or with what
  Whisper hears in it ("asr", the app's path; words Whisper was unsure of are left out, as the app
  leaves them out, unless --read-unsure-words);
* label-matched pairing, only when asked for: each clip with a text *of its own class* drawn from a
  text corpus. The text carries the answer, so that figure measures the text branch with
  label-carrying text, not the model on speech, and its protocol says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from ser_demo.model import ModelConfig
from train.datasets import AUDIO_CORPORA, Utterance, load_corpus
from train.pairing import BimodalSample, LabelMatchedPairing, natural_pairs, text_samples
from train.protocol import Fold, FoldResult, evaluate
from train.text_corpora import TEXT_CORPORA, load_text_corpus
from train.transcripts import with_missing_transcripts, words_read_with_the_voice

LABEL_MATCHED_WARNING = (
    "each clip is paired with a text of its own class, so the text carries the answer: this measures "
    "the text branch with label-carrying text, not the model on speech"
)


@dataclass
class EvaluationSet:
    samples: list[BimodalSample]
    protocol: str  # what the model was given, e.g. "audio + Whisper's transcript (faster-whisper tiny.en)"
    data: str  # e.g. "dailydialog test split (../shared/data/dailydialog): 3749 texts"
    reports: list[str]  # the loaders' kept/dropped counts


def is_text_corpus(name: str) -> bool:
    return name.lower().replace("-", "").replace("_", "") in TEXT_CORPORA


def branches(config: ModelConfig, modality: str) -> tuple[bool, bool]:
    """(give audio, give text) for a modality; "both" means every branch the checkpoint has."""
    if modality == "audio" and not config.use_audio:
        raise ValueError("this checkpoint has no audio branch: use --modality text")
    if modality == "text" and not config.use_text:
        raise ValueError("this checkpoint has no text branch: use --modality audio")
    return config.use_audio and modality in ("both", "audio"), config.use_text and modality in ("both", "text")


def _checkpoint_kind(config: ModelConfig) -> str:
    if config.use_audio and config.use_text:
        return "the text branch of an audio + text checkpoint, given no audio"
    return "a text-only checkpoint"


def text_corpus_set(name: str, path: str, split: str, config: ModelConfig) -> EvaluationSet:
    """A text corpus's labelled texts, no audio. ``split``: train, dev, test, or all."""
    if not config.use_text:
        raise ValueError(f"this checkpoint has no text branch: it cannot score the text corpus {name}")
    texts, report = load_text_corpus(name, path, split=None if split == "all" else split)
    if not texts:
        raise ValueError(f"{name}: nothing to score in {path} ({report})")
    what = "file" if Path(path).is_file() else f"{split} split" if split != "all" else "all splits"
    return EvaluationSet(
        samples=text_samples(texts),
        protocol=f"text only ({_checkpoint_kind(config)}) on the corpus's own labelled texts",
        data=f"{name} {what} ({path}): {len(texts)} texts",
        reports=[str(report)],
    )


def audio_corpus_set(
    name: str,
    path: str,
    config: ModelConfig,
    modality: str,
    transcripts: str = "own",
    *,
    asr: Optional[Callable[[list[Utterance]], tuple[list[Utterance], str]]] = None,
    label_matched: Sequence[tuple[str, str]] = (),
    calm_as_neutral: bool = False,
) -> EvaluationSet:
    """An audio corpus's clips, with the words ``transcripts`` says when the modality wants words.

    ``asr(utterances)`` -> (utterances carrying Whisper's words, the recogniser's name), needed for
    transcripts="asr". ``label_matched``: (text corpus, path) pairs whose test splits supply texts
    of each clip's own class instead (only when explicitly asked for; see the module docstring).
    """
    options = {"calm_as_neutral": True} if calm_as_neutral and name == "ravdess" else {}
    utterances, report = load_corpus(name, path, **options)
    reports = [str(report)]
    if not utterances:
        raise ValueError(f"{name}: nothing to score in {path} ({report})")
    give_audio, give_text = branches(config, modality)
    words = ""
    if give_text and label_matched:
        texts = []
        for text_name, text_path in label_matched:
            items, text_report = load_text_corpus(text_name, text_path, split="test")
            texts += items
            reports.append(f"test: {text_report}")
        samples = LabelMatchedPairing(utterances, texts, seed=0).epoch(0)
        words = f"a label-matched text from the test split of {', '.join(n for n, _ in label_matched)}; " + LABEL_MATCHED_WARNING
    else:
        if give_text and transcripts == "asr":
            utterances, recogniser = asr(utterances)
            words = f"Whisper's transcript ({recogniser}) of the trimmed clip, as in the app"
        elif give_text and transcripts == "own+asr" and any(not u.transcript for u in utterances):
            utterances, recogniser, _ = with_missing_transcripts(utterances, asr)
            words = f"the clip's own transcript, or Whisper's ({recogniser}) where the corpus has none"
        elif give_text:
            lacking = sum(u.transcript is None for u in utterances)
            if lacking:
                raise ValueError(
                    f"{lacking} of {len(utterances)} {name} utterances have no transcript of their own: "
                    "use --transcripts asr (Whisper's words) or --modality audio"
                )
            words = "the clip's own transcript (from the corpus)"
        if give_audio and give_text:  # as the app reads them with the voice
            unsure = sum(u.unsure_words for u in utterances)
            utterances = words_read_with_the_voice(utterances)
            if unsure:
                words += (f"; Whisper's words left out where it was unsure of them ({unsure} of {len(utterances)} "
                          "clips: the voice alone, as in the app)")
        samples = natural_pairs(utterances)
    if give_audio and give_text and config.words_gate is not None:
        words += (f"; words set aside when {config.words_gate_rule} "
                  "(the voice alone, as in the app)")
    samples = [replace(s, text=s.text if give_text else "", audio_path=s.audio_path if give_audio else None) for s in samples]
    if give_audio and give_text:
        protocol = f"audio + {words}"
    elif give_audio:
        protocol = "audio only"
    else:
        protocol = f"text only, no audio: {words}"
    return EvaluationSet(samples, protocol=protocol, data=f"{name} ({path}): {len(samples)} clips", reports=reports)


def score(model, evaluation: EvaluationSet, cache_dir: Path) -> FoldResult:
    """Predict every sample and measure WA, UA, recalls and the confusion matrix."""
    from train.features import FeatureBank
    from train.trainer import predict_labels

    if not evaluation.samples:
        raise ValueError(f"nothing to score in {evaluation.data}")
    predicted = predict_labels(model, evaluation.samples, FeatureBank(model.config, cache_dir))
    fold = Fold(protocol=evaluation.protocol, index=0, seed=0, train=(), dev=(), test=tuple(range(len(predicted))))
    return evaluate([s.label for s in evaluation.samples], predicted, fold, labels=model.config.labels)


def seen_in_training(checkpoint: str, corpus: str, split: str | None) -> Optional[str]:
    """A warning when the checkpoint's training.json says it trained on what is being scored."""
    record = Path(checkpoint) / "training.json"
    if not record.is_file():
        return None
    try:
        lines = json.loads(record.read_text()).get("data", [])
    except (json.JSONDecodeError, AttributeError):
        return None
    corpus = corpus.lower()
    if corpus in AUDIO_CORPORA and any(str(line).startswith(f"{corpus}:") for line in lines):
        return f"the checkpoint was trained on {corpus}: only speakers it held out are unseen, so this is not a score on new voices"
    used = {str(line).split(":")[0] for line in lines if f": {corpus}:" in str(line)} & {"train", "dev"}
    if used and split in (*used, "all"):
        return f"the checkpoint used the {' and '.join(s for s in ('train', 'dev') if s in used)} split of {corpus} in training: score its test split"
    return None
