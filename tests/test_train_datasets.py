"""Corpus loaders on small fake trees in each release's layout; ASR transcript cache; feature
cache; audio-text pairing. The real corpora are exercised by the tests marked shared_data."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from train.audio_corpora import load_crema_d, load_emodb, load_iemocap, load_ravdess, load_savee, load_tess
from train.cache import FeatureCache, file_sha256
from train.datasets import (
    AUDIO_CORPORA,
    LABELS,
    TextSample,
    Utterance,
    load_corpus,
    load_goemotions,
    load_manifest,
    transcripts_for,
    with_transcripts,
)
from train.features import INGEST
from train.transcripts import Transcribed, transcribed_for, transcriber_name, words_read_with_the_voice
from train.pairing import LabelMatchedPairing, ModalityDropout, class_text_pairs, natural_pairs
from train.text_corpora import TEXT_SPLITS, load_dailydialog, load_isear, load_text_corpus


def touch(path: Path, content: bytes = b"RIFF") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def write_tone(path: Path, seconds: float = 0.2, sample_rate: int = 16000, frequency: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), sample_rate)
    return path


def test_labels_match_the_model():
    from ser_demo.model import LABELS as MODEL_LABELS

    assert LABELS == MODEL_LABELS


# ---------------------------------------------------------------------------- IEMOCAP


IEMOCAP_EVAL = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
C-E3:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[10.0100 - 11.3925]\tSes01F_impro01_M000\tfru\t[2.5000, 3.5000, 3.5000]
C-E2:\tFrustration;\t()

[14.8872 - 18.0175]\tSes01F_impro01_M001\tang\t[2.0000, 3.5000, 4.0000]

[19.2900 - 20.7875]\tSes01F_impro01_F001\texc\t[4.0000, 3.5000, 3.0000]

[21.0000 - 22.0000]\tSes01F_impro01_F002\thap\t[4.0000, 3.0000, 3.0000]

[23.0000 - 24.0000]\tSes01F_impro01_F003\txxx\t[3.0000, 3.0000, 3.0000]

[25.0000 - 26.0000]\tSes01F_impro01_M002\tsad\t[1.5000, 2.0000, 2.0000]
"""

IEMOCAP_TRANSCRIPT = """Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
Ses01F_impro01_M000 [010.0100-011.3925]: Do you have your forms?
Ses01F_impro01_M001 [014.8872-018.0175]: Yeah. [LAUGHTER] No, that's the wrong line.[BREATHING]
Ses01F_impro01_F001 [019.2900-020.7875]: [GARBAGE] Oh, I got in! [LIPSMACK]
Ses01F_impro01_F002 [021.0000-022.0000]: [LAUGHTER]
Ses01F_impro01_F003 [023.0000-024.0000]: Okay.
Ses01F_impro01_M002 [025.0000-026.0000]: I'm so sorry.
"""


def make_iemocap(root: Path, sessions=(1, 2, 3)) -> Path:
    release = root / "IEMOCAP_full_release"
    for n in sessions:
        session = release / f"Session{n}"
        tag = f"Ses0{n}F"
        dialog = f"{tag}_impro01"
        (session / "dialog" / "EmoEvaluation" / "Categorical").mkdir(parents=True)
        (session / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text(IEMOCAP_EVAL.replace("Ses01F", tag))
        (session / "dialog" / "EmoEvaluation" / "Categorical" / f"{dialog}_e1_cat.txt").write_text(
            f"{tag}_impro01_F000 :Neutral; ()\n"
        )
        touch(session / "dialog" / "transcriptions" / f"{dialog}.txt", IEMOCAP_TRANSCRIPT.replace("Ses01F", tag).encode())
        for utt in ("F000", "M000", "M001", "F001", "F002", "F003"):  # M002 has no audio
            touch(session / "sentences" / "wav" / dialog / f"{tag}_impro01_{utt}.wav")
    return root


def test_iemocap_maps_four_classes_merges_excited_and_counts_drops(tmp_path):
    utterances, report = load_iemocap(make_iemocap(tmp_path))
    # per session: neu, ang, exc->happy, hap->happy kept; fru, xxx dropped; sad has no audio
    assert report.kept == len(utterances) == 12
    assert report.dropped == {"fru": 3, "missing_audio": 3, "xxx": 3}
    assert Counter(u.label for u in utterances) == {"neutral": 3, "angry": 3, "happy": 6}
    first = utterances[0]
    assert first.utterance_id == "Ses01F_impro01_F000"
    assert first.transcript == "Excuse me."
    assert first.audio_path == tmp_path / "IEMOCAP_full_release/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    assert (first.speaker, first.session, first.corpus) == ("Ses01F", "Ses01", "iemocap")
    # The speaker of an M turn in an F-recorded dialog is the male actor of that session.
    angry = next(u for u in utterances if u.label == "angry" and u.session == "Ses02")
    assert angry.speaker == "Ses02M"


def test_iemocap_annotation_tags_never_reach_the_text(tmp_path):
    """[LAUGHTER], [BREATHING], [GARBAGE] ... are the transcribers' notes, not words anyone said."""
    utterances, _ = load_iemocap(make_iemocap(tmp_path))
    by_id = {u.utterance_id: u.transcript for u in utterances if u.session == "Ses01"}
    assert by_id["Ses01F_impro01_M001"] == "Yeah. No, that's the wrong line."
    assert by_id["Ses01F_impro01_F001"] == "Oh, I got in!"
    assert by_id["Ses01F_impro01_F002"] == ""  # a turn of laughter only has no words
    assert not any("[" in u.transcript or "]" in u.transcript for u in utterances)


def test_iemocap_accepts_release_folder_and_session_subset(tmp_path):
    make_iemocap(tmp_path)
    utterances, _ = load_iemocap(tmp_path / "IEMOCAP_full_release", sessions=(2,))
    assert {u.session for u in utterances} == {"Ses02"}
    with_missing_audio, report = load_iemocap(tmp_path, sessions=(1,), require_audio=False)
    assert report.kept == 5 and "missing_audio" not in report.dropped
    assert next(u for u in with_missing_audio if u.label == "sad").transcript == "I'm so sorry."
    with pytest.raises(FileNotFoundError):
        load_iemocap(tmp_path, sessions=(4,))


# ---------------------------------------------------------------------------- RAVDESS


def make_ravdess(root: Path, actors=(1, 2), extension=".flac") -> Path:
    for actor in actors:
        for emotion in ("01", "02", "03", "04", "05", "06", "08"):
            for statement in ("01", "02"):
                touch(root / f"Actor_{actor:02d}" / f"03-01-{emotion}-01-{statement}-01-{actor:02d}{extension}")
    touch(root / "Actor_01" / "03-02-03-01-01-01-01.wav")  # song: not speech
    touch(root / "Actor_01" / "notes.wav")
    return root


def test_ravdess_parses_codes_and_drops_other_emotions(tmp_path):
    utterances, report = load_ravdess(make_ravdess(tmp_path))
    # per actor: 2 statements x (neutral, happy, sad, angry) kept; calm, fearful, surprised dropped
    assert report.kept == 16
    assert report.dropped == {"calm": 4, "fearful": 4, "not_audio_only_speech": 1, "surprised": 4, "unparsed_name": 1}
    assert Counter(u.label for u in utterances) == {label: 4 for label in LABELS}
    u = next(u for u in utterances if u.utterance_id == "03-01-05-01-02-01-02")
    assert (u.label, u.speaker, u.transcript, u.corpus) == ("angry", "ravdess_02", "Dogs are sitting by the door", "ravdess")
    assert u.audio_path.suffix == ".flac"


def test_ravdess_calm_as_neutral(tmp_path):
    utterances, report = load_ravdess(make_ravdess(tmp_path, actors=(3,), extension=".wav"), calm_as_neutral=True)
    assert Counter(u.label for u in utterances)["neutral"] == 4
    assert "calm" not in report.dropped
    assert {u.speaker for u in utterances} == {"ravdess_03"}


# ---------------------------------------------------------------------------- TESS


def test_tess_folder_names_odd_spellings_and_transcripts(tmp_path):
    for folder, files in {
        "OAF_angry": ["OAF_back_angry.wav", "OAF_bar_angry.flac"],
        "OAF_neutral": ["OA_bite_neutral.wav"],  # the release really has this one
        "YAF_happy": ["YAF_youth_happy.wav"],
        "YAF_sad": ["YAF_home_sad.wav"],
        "OAF_Fear": ["OAF_back_fear.wav"],
        "YAF_pleasant_surprised": ["YAF_back_ps.wav"],
        "OAF_Pleasant_surprise": ["OAF_back_ps.wav"],
        "YAF_disgust": ["YAF_back_disgust.wav"],
    }.items():
        for name in files:
            touch(tmp_path / "TESS Toronto emotional speech set data" / folder / name)
    utterances, report = load_tess(tmp_path)
    assert report.kept == 5
    assert report.dropped == {"disgust": 1, "fear": 1, "pleasant_surprise": 2}
    by_id = {u.utterance_id: u for u in utterances}
    assert by_id["OAF_bar_angry"].transcript == "Say the word bar"
    assert (by_id["OA_bite_neutral"].label, by_id["OA_bite_neutral"].speaker) == ("neutral", "tess_OAF")
    assert (by_id["YAF_youth_happy"].label, by_id["YAF_youth_happy"].speaker) == ("happy", "tess_YAF")


# ---------------------------------------------------------------------------- CREMA-D, EmoDB


def test_crema_d_sentences_and_emotions(tmp_path):
    for name in ("1001_DFA_ANG_XX.wav", "1001_IEO_HAP_HI.wav", "1002_TSI_SAD_LO.flac", "1002_WSI_NEU_XX.wav",
                 "1003_ITS_DIS_MD.wav", "1003_MTI_FEA_XX.wav", "1004_ZZZ_ANG_XX.wav"):  # fmt: skip
        touch(tmp_path / "AudioWAV" / name)
    utterances, report = load_crema_d(tmp_path)
    assert report.kept == 4
    assert report.dropped == {"disgust": 1, "fear": 1, "unparsed_name": 1}
    by_id = {u.utterance_id: u for u in utterances}
    assert by_id["1001_DFA_ANG_XX"].transcript == "Don't forget a jacket"
    assert by_id["1001_DFA_ANG_XX"].label == "angry"
    assert by_id["1002_TSI_SAD_LO"].transcript == "The surface is slick"
    assert by_id["1002_WSI_NEU_XX"].speaker == "crema-d_1002"


def test_emodb_speaker_text_and_german_emotion_letters(tmp_path):
    for name in ("03a01Fa.wav", "03a01Wb.wav", "08b10Ta.flac", "16a05Nc.wav", "10a02La.wav", "11b01Ea.wav", "12a04Ab.wav"):
        touch(tmp_path / "wav" / name)
    utterances, report = load_emodb(tmp_path)
    assert report.kept == 4
    assert report.dropped == {"boredom": 1, "disgust": 1, "fear": 1}
    by_id = {u.utterance_id: u for u in utterances}
    assert (by_id["03a01Fa"].label, by_id["03a01Fa"].speaker) == ("happy", "emodb_03")
    assert by_id["03a01Fa"].transcript == "Der Lappen liegt auf dem Eisschrank."
    assert by_id["03a01Wb"].label == "angry"
    assert by_id["08b10Ta"].label == "sad"
    assert by_id["16a05Nc"].label == "neutral"


def test_savee_prefix_speakers_codes_and_the_release_layout(tmp_path):
    for name in ("DC_a01.flac", "DC_sa15.flac", "JE_h03.wav", "KL_n30.flac", "JK_d01.wav", "JK_su02.wav", "XX_a01.wav",
                 "DC_x01.wav"):  # fmt: skip
        touch(tmp_path / "processed" / name)
    utterances, report = load_savee(tmp_path / "processed")
    assert report.kept == 4
    assert report.dropped == {"disgust": 1, "surprise": 1, "unknown_speaker": 1, "unparsed_name": 1}
    by_id = {u.utterance_id: u for u in utterances}
    assert (by_id["DC_a01"].label, by_id["DC_a01"].speaker, by_id["DC_a01"].corpus) == ("angry", "savee_DC", "savee")
    assert by_id["DC_sa15"].label == "sad" and by_id["KL_n30"].label == "neutral" and by_id["JE_h03"].label == "happy"
    assert all(u.transcript is None for u in utterances)  # the names do not say which sentence
    # the original release: AudioData/<speaker>/<code>.wav
    touch(tmp_path / "release" / "AudioData" / "JK" / "sa01.wav")
    touch(tmp_path / "release" / "AudioData" / "JK" / "f02.wav")
    utterances, report = load_corpus("savee", tmp_path / "release")
    assert [(u.speaker, u.label) for u in utterances] == [("savee_JK", "sad")] and report.dropped == {"fear": 1}


# ---------------------------------------------------------------------------- manifest, GoEmotions


def test_manifest_resolves_relative_paths_and_aliases(tmp_path):
    touch(tmp_path / "corpus" / "clips" / "a.wav")
    touch(tmp_path / "elsewhere" / "b.flac")
    manifest = tmp_path / "corpus" / "mine.csv"
    manifest.write_text(
        "audio_path,transcript,label,speaker\n"
        "clips/a.wav,I am furious,anger,s1\n"
        f"{tmp_path / 'elsewhere' / 'b.flac'},,neutral,s2\n"
        ",just text,joy,s3\n"
        "clips/missing.wav,hello,sad,s4\n"
        "clips/a.wav,eww,disgust,s1\n"
    )
    utterances, report = load_corpus("manifest", manifest)
    assert report.kept == 3
    assert report.dropped == {"disgust": 1, "missing_audio": 1}
    assert utterances[0].audio_path == tmp_path / "corpus" / "clips" / "a.wav"
    assert (utterances[0].label, utterances[0].transcript, utterances[0].corpus) == ("angry", "I am furious", "mine")
    assert utterances[1].transcript is None and utterances[1].audio_path.is_absolute()
    assert (utterances[2].audio_path, utterances[2].label) == (None, "happy")
    with pytest.raises(ValueError, match="missing columns"):
        bad = tmp_path / "bad.csv"
        bad.write_text("path,label\nx.wav,sad\n")
        load_manifest(bad)


def test_goemotions_keeps_single_mapped_labels(tmp_path):
    (tmp_path / "labels.txt").write_text("anger\ndisgust\nfear\njoy\nneutral\nsadness\nsurprise\n")
    (tmp_path / "train.tsv").write_text(
        "I hate this\t0\tc1\n"
        "So happy for you\t3\tc2\n"
        "ok\t4\tc3\n"
        "I miss her\t5\tc4\n"
        "gross\t1\tc5\n"
        "wow what\t6\tc6\n"
        "angry and sad\t0,5\tc7\n"
    )
    (tmp_path / "dev.tsv").write_text("scary\t2\tc8\nyay\t3\tc9\n")
    (tmp_path / "test.tsv").write_text("meh\t4\tc10\n")
    samples, report = load_goemotions(tmp_path / "train.tsv")
    assert [(s.text, s.label) for s in samples] == [
        ("I hate this", "angry"), ("So happy for you", "happy"), ("ok", "neutral"), ("I miss her", "sad")
    ]
    assert report.dropped == {"disgust": 1, "multi_label": 1, "surprise": 1}
    all_splits, report = load_corpus("goemotions", tmp_path)
    assert report.kept == len(all_splits) == 6 and report.dropped["fear"] == 1
    assert all(isinstance(s, TextSample) and s.corpus == "goemotions" for s in all_splits)
    assert [s.text for s in load_goemotions(tmp_path, split="dev")[0]] == ["yay"]
    (tmp_path / "train.tsv").unlink()  # a folder with only some of the splits reads those
    assert [s.text for s in load_goemotions(tmp_path)[0]] == ["yay", "meh"]
    with pytest.raises(FileNotFoundError, match="train.tsv"):
        load_goemotions(tmp_path, split="train")
    with pytest.raises(ValueError, match="one file"):
        load_goemotions(tmp_path / "dev.tsv", split="dev")


# ---------------------------------------------------------------------------- DailyDialog, ISEAR


def write_dailydialog(folder: Path, name: str, dialogues: list[list[tuple[str, int]]], extra_ids: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [" __eou__ ".join(text for text, _ in d) + " __eou__" for d in dialogues]
    ids = [" ".join(str(i) for _, i in d) for d in dialogues]
    (folder / f"dialogues_{name}.txt").write_text("\n".join(lines) + "\n")
    (folder / f"dialogues_emotion_{name}.txt").write_text("\n".join(ids) + extra_ids + "\n")
    (folder / f"dialogues_act_{name}.txt").write_text("\n".join(ids) + "\n")  # acts: not emotions


def make_dailydialog(root: Path) -> Path:
    shared = [("Can I help you ?", 0), ("I ’ m so angry I can ’ t think !", 1)]
    write_dailydialog(root / "validation", "validation", [
        shared,
        [("That ' s wonderful news !", 4), ("Yuck , gross .", 2), ("Oh no , she died .", 5), ("Really ?", 6)],
    ])  # fmt: skip
    test = [shared] + [[(f"Line {i} , fine .", 0), (f"Great {i} !", 4), (f"Scary {i} .", 3)] for i in range(40)]
    write_dailydialog(root / "test", "test", test + [test[5]])  # a copy of one dialogue, as in the release
    return root


def test_dailydialog_maps_emotions_and_joins_the_tokenised_text(tmp_path):
    samples, report = load_dailydialog(make_dailydialog(tmp_path), split="train")
    assert [(s.text, s.label) for s in samples] == [
        ("Can I help you?", "neutral"), ("I'm so angry I can't think!", "angry"),
        ("That's wonderful news!", "happy"), ("Oh no, she died.", "sad"),
    ]  # fmt: skip
    assert report.dropped == {"disgust": 1, "surprise": 1}
    everything, report = load_corpus("dailydialog", tmp_path)
    assert report.total == 6 + 41 * 3 + 2 and report.dropped["fear"] == 41
    assert load_dailydialog(tmp_path / "test")[1].kept == 41 * 2 + 2  # one split's folder reads alone


def test_dailydialog_dev_and_test_halve_the_test_split_by_dialogue_without_train_dialogues(tmp_path):
    make_dailydialog(tmp_path)
    dev, dev_report = load_dailydialog(tmp_path, split="dev")
    test, test_report = load_dailydialog(tmp_path, split="test")
    dev_numbers = {s.text.split()[1].strip(",!.") for s in dev}
    test_numbers = {s.text.split()[1].strip(",!.") for s in test}
    assert not dev_numbers & test_numbers  # whole dialogues, and the copy went with its original
    assert len(dev_numbers) + len(test_numbers) == 40 and min(len(dev_numbers), len(test_numbers)) >= 10
    assert "Can I help you?" not in {s.text for s in dev + test}  # that dialogue is in train
    assert dev_report.dropped.get("dialogue_in_train", 0) + test_report.dropped.get("dialogue_in_train", 0) == 2
    assert [s.text for s in load_dailydialog(tmp_path, split="dev")[0]] == [s.text for s in dev]
    with pytest.raises(FileNotFoundError, match="validation"):
        load_dailydialog(tmp_path / "test", split="train")


def test_dailydialog_drops_a_dialogue_whose_ids_do_not_match(tmp_path):
    write_dailydialog(tmp_path / "validation", "validation", [[("Hi .", 0), ("Hello .", 0)]], extra_ids="")
    (tmp_path / "validation" / "dialogues_emotion_validation.txt").write_text("0 0 4\n")
    samples, report = load_dailydialog(tmp_path)
    assert samples == [] and report.dropped == {"misaligned_dialogue": 2}


ISEAR_HEADER = "ID|CITY|Field1|MYKEY|SIT|STATE|"


def make_isear(folder: Path, respondents: int = 60) -> Path:
    rows = [ISEAR_HEADER]
    for person in range(respondents):
        rows.append(f"{person}|1|joy|{person}1|When I passed my exam {person}.|1|")
        rows.append(f"{person}|1|anger|{person}2|Someone lied to me á about money {person}.|1|")
        rows.append(f"{person}|1|sadness|{person}3|My dog died, and á|I cried {person}.|1|")  # a line break as '|'
        rows.append(f"{person}|1|fear|{person}4|A dark street {person}.|1|")
    rows.append('999|1|joy|9991|[ No response.]|1|')
    rows.append('999|1|sadness|9993|[ When my friend called me \\stupid\\" in class.]|1|')
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "isear.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_isear_columns_cleaning_and_non_answers(tmp_path):
    samples, report = load_isear(make_isear(tmp_path))
    assert report.kept == 60 * 3 + 1 and report.dropped == {"fear": 60, "no_situation": 1}
    texts = {s.text: s.label for s in samples}
    assert texts["When I passed my exam 7."] == "happy"
    assert texts["Someone lied to me about money 7."] == "angry"
    assert texts["My dog died, and I cried 7."] == "sad"
    assert texts['When my friend called me "stupid" in class.'] == "sad"
    assert Counter(s.label for s in samples) == {"happy": 60, "angry": 60, "sad": 61}  # no neutral
    assert load_corpus("isear", tmp_path / "isear.csv")[1].kept == report.kept


def test_isear_splits_by_respondent(tmp_path):
    make_isear(tmp_path, respondents=200)
    splits = {split: load_text_corpus("isear", tmp_path, split=split)[0] for split in TEXT_SPLITS}
    people = {split: {s.text.rstrip(".").split()[-1] for s in samples} for split, samples in splits.items()}
    assert not (people["train"] & people["dev"] or people["train"] & people["test"] or people["dev"] & people["test"])
    assert sum(len(p) for p in people.values()) == 201
    assert 120 <= len(people["train"]) <= 190 and len(people["dev"]) >= 5 and len(people["test"]) >= 5
    assert {s.text for s in load_isear(tmp_path, split="dev")[0]} == {s.text for s in splits["dev"]}
    with pytest.raises(ValueError, match="split"):
        load_isear(tmp_path, split="validation")
    with pytest.raises(KeyError, match="known"):
        load_text_corpus("ravdess", tmp_path)


def test_registry_and_unknown_corpus(tmp_path):
    assert set(AUDIO_CORPORA) == {"iemocap", "ravdess", "tess", "crema-d", "emodb", "savee", "manifest"}
    touch(tmp_path / "wav" / "03a01Fa.wav")
    assert load_corpus("EmoDB", tmp_path)[1].kept == 1
    with pytest.raises(KeyError, match="known"):
        load_corpus("msp-podcast", tmp_path)


# ---------------------------------------------------------------------------- ASR transcripts


@dataclass
class FakeResult:
    text: str
    log_probability: float | None = None


class FakeTranscriber:
    name = "fake-asr"

    def __init__(self, model_name="tiny", log_probability=None):
        self.model_name, self.log_probability = model_name, log_probability
        self.calls = []

    def transcribe(self, audio):
        self.calls.append(audio)
        return FakeResult(f" {len(audio)} samples ", self.log_probability)


def speech_copy(speech_file: Path, path: Path, sample_rate: int = 16000) -> Path:
    """The committed speech fixture (1 s of silence around it), written at another rate if asked."""
    import soxr

    audio, rate = sf.read(speech_file, dtype="float32")
    audio = np.concatenate([np.zeros(rate, np.float32), audio, np.zeros(rate, np.float32)])
    sf.write(path, soxr.resample(audio, rate, sample_rate) if sample_rate != rate else audio, sample_rate)
    return path


def test_transcripts_are_cached_per_audio_content_and_model(speech_file, tmp_path):
    from train.features import load_clip

    a = speech_copy(speech_file, tmp_path / "a.wav")
    b = speech_copy(speech_file, tmp_path / "b.wav", sample_rate=8000)  # resampled to 16 kHz
    copy_of_a = tmp_path / "copy_of_a.wav"
    copy_of_a.write_bytes(a.read_bytes())
    utterances = [
        Utterance(path, "truth", "sad", "s1", "fake", path.stem) for path in (a, b, copy_of_a)
    ] + [Utterance(None, "typed text", "sad", "s1", "fake", "text-only")]

    asr = FakeTranscriber()
    texts = transcripts_for(utterances, asr, tmp_path / "cache")
    heard_a, heard_b = len(load_clip(a)), len(load_clip(b))
    assert texts == [f"{heard_a} samples", f"{heard_b} samples", f"{heard_a} samples", "typed text"]
    assert len(asr.calls) == 2  # the copy of a hits the cache by content
    assert all(call.dtype == np.float32 and call.ndim == 1 for call in asr.calls)

    again = FakeTranscriber()
    assert transcripts_for(utterances, again, tmp_path / "cache") == texts
    assert again.calls == []  # a new process would read the JSONL file, not transcribe

    other_model = FakeTranscriber(model_name="large")
    transcripts_for(utterances[:1], other_model, tmp_path / "cache")
    assert len(other_model.calls) == 1
    fitted = FakeTranscriber()  # Whisper's window fitted to the clip: other words than the 30 s window's
    fitted.window_padding = 15.0
    transcripts_for(utterances[:1], fitted, tmp_path / "cache")
    assert len(fitted.calls) == 1
    records = [json.loads(line) for line in (tmp_path / "cache" / "transcripts.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {r["transcriber"] for r in records} == {
        "FakeTranscriber|name=fake-asr|model_name=tiny", "FakeTranscriber|name=fake-asr|model_name=large",
        "FakeTranscriber|name=fake-asr|model_name=tiny|window_padding=15.0",
    }

    asr_utterances = with_transcripts(utterances, texts)
    assert asr_utterances[1].transcript == f"{heard_b} samples" and asr_utterances[1].label == "sad"


def test_whispers_confidence_is_cached_and_marks_unsure_words(speech_file, tmp_path):
    """transcribed_for keeps Whisper's confidence with its text; a cache line written before it was kept
    is heard again; unsure words are read only without the voice."""
    a = speech_copy(speech_file, tmp_path / "a.wav")
    cache = tmp_path / "cache"
    cache.mkdir()
    older = {"audio_sha256": file_sha256(a), "transcriber": transcriber_name(FakeTranscriber()), "ingest": INGEST,
             "text": "from before"}
    (cache / "transcripts.jsonl").write_text(json.dumps(older) + "\n")

    asr = FakeTranscriber(log_probability=-1.7)  # as tiny.en writes English words for German speech
    (heard,) = transcribed_for([Utterance(a, None, "sad", "s", "fake", "a")], asr, cache)
    assert len(asr.calls) == 1 and heard == Transcribed(f"{len(asr.calls[0])} samples", -1.7) and heard.unsure
    assert not Transcribed("kids are talking", -0.2).unsure and not Transcribed("typed", None).unsure
    again = FakeTranscriber()
    assert transcribed_for([Utterance(a, None, "sad", "s", "fake", "a")], again, cache) == [heard] and again.calls == []

    utterances = with_transcripts([Utterance(a, None, "sad", "s", "fake", "a"), Utterance(a, None, "sad", "s", "fake", "b")],
                                  [heard, Transcribed("kids are talking", -0.2)])
    assert [u.unsure_words for u in utterances] == [True, False]
    with_voice = words_read_with_the_voice(utterances)
    assert [u.transcript for u in with_voice] == ["", "kids are talking"] and not any(u.unsure_words for u in with_voice)
    assert with_transcripts(utterances[:1], ["plain text"])[0].unsure_words is False  # no confidence: read


def test_whisper_hears_the_trimmed_clip_the_app_hears(speech_file, tmp_path):
    """The ASR setting transcribes what the app's Whisper gets: trimmed, peak-normalised 16 kHz."""
    from ser_demo.ingest import load_audio
    from train.features import INGEST

    clip = speech_copy(speech_file, tmp_path / "padded.wav")
    asr = FakeTranscriber()
    transcripts_for([Utterance(clip, None, "sad", "s", "fake", "padded")], asr, tmp_path / "cache")
    as_the_app_hears = load_audio(clip, trim_silence=True)  # what EmotionRecognizer.listen passes to Whisper
    assert np.array_equal(asr.calls[0], as_the_app_hears)
    assert len(asr.calls[0]) < len(sf.read(clip)[0]) - 16000  # the 2 s of silence went
    # transcripts of raw reads (cached before the trimming) are not reused: the key names the ingestion
    (record,) = [json.loads(line) for line in (tmp_path / "cache" / "transcripts.jsonl").read_text().splitlines()]
    assert record["ingest"] == INGEST


def test_a_clip_without_speech_gets_no_words_and_no_asr_call(tmp_path):
    hum = write_tone(tmp_path / "hum.wav", seconds=1.0)  # a steady tone is not speech
    asr = FakeTranscriber()
    with pytest.warns(UserWarning, match="without audio"):
        assert transcripts_for([Utterance(hum, None, "sad", "s", "fake", "hum")], asr, tmp_path / "cache") == [""]
    assert asr.calls == []


def test_transcript_cache_survives_a_truncated_last_line(speech_file, tmp_path):
    a = speech_copy(speech_file, tmp_path / "a.wav")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "transcripts.jsonl").write_text('{"audio_sha256": "abc", "transcr')
    asr = FakeTranscriber()
    texts = transcripts_for([Utterance(a, None, "happy", "s", "fake", "a")], asr, cache)
    assert len(asr.calls) == 1 and texts == [f"{len(asr.calls[0])} samples"]


# ---------------------------------------------------------------------------- feature cache


def test_feature_cache_hits_never_recompute(tmp_path):
    audio = write_tone(tmp_path / "a.wav")
    calls = []

    def compute(path):
        calls.append(path)
        return np.ones((3, 96), dtype=np.float64) * len(calls)

    cache = FeatureCache(tmp_path / "features")
    params = {"n_mfcc": 32, "hop_ms": 10, "deltas": True}
    first = cache.get_or_compute(audio, params, compute)
    assert first.dtype == np.float32 and first.shape == (3, 96)
    same_params_other_order = {"deltas": True, "hop_ms": 10, "n_mfcc": 32}
    second = cache.get_or_compute(audio, same_params_other_order, compute)
    assert len(calls) == 1 and np.array_equal(first, second)
    assert (cache.hits, cache.misses) == (1, 1)

    cache.get_or_compute(audio, {**params, "n_mfcc": 40}, compute)  # other parameters: a miss
    assert len(calls) == 2
    write_tone(audio, frequency=220.0)  # other content at the same path: a miss
    cache.get_or_compute(audio, params, compute)
    assert len(calls) == 3
    assert not list((tmp_path / "features").rglob("*.tmp"))


def test_feature_cache_recovers_from_a_damaged_entry(tmp_path):
    audio = write_tone(tmp_path / "a.wav")
    cache = FeatureCache(tmp_path / "features")
    params = {"n_mfcc": 32}
    entry = cache.entry_path(cache.key(audio, params))
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"\x93NUMPY half-writ")  # as if a writer died without the temp+replace dance
    stray_temp = entry.parent / f"{entry.stem}abc.tmp"
    stray_temp.write_bytes(b"partial")
    features = cache.get_or_compute(audio, params, lambda path: np.zeros((2, 2)))
    assert features.shape == (2, 2) and cache.misses == 1
    assert np.load(entry).shape == (2, 2)
    assert cache.get_or_compute(audio, params, lambda path: pytest.fail("hit must not compute")).shape == (2, 2)


# ---------------------------------------------------------------------------- pairing


def fake_audio(n_per_label=5):
    return [
        Utterance(Path(f"/x/{label}{i}.wav"), "Kids are talking by the door", label, f"spk{i % 3}", "ravdess", f"{label}{i}")
        for label in LABELS
        for i in range(n_per_label)
    ]


def fake_texts():
    return [TextSample(f"{label} text {i}", label, "goemotions") for label in LABELS for i in range(3)]


def test_label_matched_pairing_is_label_consistent_and_deterministic():
    pairing = LabelMatchedPairing(fake_audio(), fake_texts(), seed=7)
    epoch0 = pairing.epoch(0)
    assert [s.utterance_id for s in epoch0] == [u.utterance_id for u in fake_audio()]
    assert all(s.text.startswith(s.label) and s.text_corpus == "goemotions" for s in epoch0)
    assert epoch0 == LabelMatchedPairing(fake_audio(), fake_texts(), seed=7).epoch(0)
    assert [s.text for s in pairing.epoch(1)] != [s.text for s in epoch0]  # re-drawn each epoch
    assert [s.text for s in LabelMatchedPairing(fake_audio(), fake_texts(), seed=8).epoch(0)] != [s.text for s in epoch0]
    # 5 clips per class, 3 texts per class: each text is used once or twice, never 3 times
    uses = Counter(s.text for s in epoch0)
    assert set(uses.values()) <= {1, 2} and len(uses) == 12


def test_neutral_words_pair_clips_of_every_class_with_neutral_texts():
    """--neutral-words P: a share P of the clips, whatever their class, hear a neutral sentence of
    the text corpora (words that say nothing, a voice that decides); the rest stay label-matched."""
    utterances = fake_audio(n_per_label=250)
    samples = LabelMatchedPairing(utterances, fake_texts(), seed=2, neutral_words=0.25).epoch(0)
    for label in ("angry", "happy", "sad"):
        mine = [s for s in samples if s.label == label]
        neutral = sum(s.text.startswith("neutral") for s in mine)
        assert abs(neutral / len(mine) - 0.25) < 0.07
        assert all(s.text.startswith(("neutral", label)) for s in mine)
    assert all(s.text.startswith("neutral") for s in samples if s.label == "neutral")
    assert LabelMatchedPairing(utterances, fake_texts(), seed=2).epoch(0) != samples
    # only label-matched texts carry the label; the neutral sentences were drawn whatever the class
    assert {s.text_carries_label for s in samples if s.text_corpus == "goemotions" and s.text.startswith(s.label)
            and s.label != "neutral"} == {True}
    with_own = LabelMatchedPairing(utterances, fake_texts(), seed=2, neutral_words=0.25, own_words=0.3).epoch(0)
    own = [s for s in with_own if s.text == "Kids are talking by the door"]
    assert abs(len(own) / len(with_own) - 0.3) < 0.05 and not any(s.text_carries_label for s in own)
    carrying = sum(s.text_carries_label for s in with_own)
    assert abs(carrying / len(with_own) - 0.7 * 0.75) < 0.05  # neither own script nor neutral draw
    with pytest.raises(ValueError, match="neutral texts"):
        LabelMatchedPairing([u for u in fake_audio() if u.label != "neutral"],
                            [t for t in fake_texts() if t.label != "neutral"], neutral_words=0.2)


def test_class_texts_pair_each_test_clip_with_its_own_class_or_another():
    """`cv --class-texts`: words that carry an emotion, the clip's own (label-matched) or another's."""
    own = class_text_pairs(fake_audio(), fake_texts(), seed=3, own_class=True)
    other = class_text_pairs(fake_audio(), fake_texts(), seed=3, own_class=False)
    assert [s.utterance_id for s in own] == [s.utterance_id for s in other] == [u.utterance_id for u in fake_audio()]
    assert all(s.text.startswith(s.label + " ") and s.text_carries_label for s in own)
    assert all(not s.text.startswith(s.label + " ") and not s.text_carries_label for s in other)
    assert len({s.text.split()[0] for s in other}) == 4  # every other class is drawn
    assert own == class_text_pairs(fake_audio(), fake_texts(), seed=3, own_class=True)  # seeded
    assert own != class_text_pairs(fake_audio(), fake_texts(), seed=4, own_class=True)
    with pytest.raises(ValueError, match="sad"):
        class_text_pairs(fake_audio(), [t for t in fake_texts() if t.label != "sad"], seed=0, own_class=True)


def test_pairing_refuses_labels_without_texts():
    texts = [t for t in fake_texts() if t.label != "sad"]
    with pytest.raises(ValueError, match="sad"):
        LabelMatchedPairing(fake_audio(), texts)


def test_modality_dropout_fractions_and_never_both():
    utterances = fake_audio(n_per_label=250)
    dropout = ModalityDropout(p_text=0.2, p_audio=0.3)
    samples = LabelMatchedPairing(utterances, fake_texts(), seed=1, dropout=dropout).epoch(3)
    no_text = sum(s.text == "" for s in samples)
    no_audio = sum(s.audio_path is None for s in samples)
    assert not any(s.text == "" and s.audio_path is None for s in samples)
    assert abs(no_text / 1000 - 0.2) < 0.05 and abs(no_audio / 1000 - 0.3) < 0.05
    with pytest.raises(ValueError):
        ModalityDropout(p_text=0.6, p_audio=0.5)


def test_natural_pairs_keep_each_utterances_own_transcript():
    utterances = fake_audio(n_per_label=2)
    samples = natural_pairs(utterances, epoch=0, seed=0)
    assert [(s.audio_path, s.text, s.text_corpus) for s in samples] == [
        (u.audio_path, u.transcript, u.corpus) for u in utterances
    ]
    dropped = natural_pairs(utterances, epoch=0, seed=0, dropout=ModalityDropout(p_text=1.0))
    assert all(s.text == "" and s.audio_path is not None for s in dropped)


# ---------------------------------------------------------------------------- real corpora


@pytest.mark.shared_data("ravdess", "tess")
def test_real_ravdess_and_tess_counts(shared_data):
    ravdess, report = load_ravdess(shared_data / "ravdess")
    assert report.kept == 504 and report.dropped == {"calm": 144}
    assert len({u.speaker for u in ravdess}) == 18
    assert Counter(u.label for u in ravdess) == {"angry": 144, "happy": 144, "sad": 144, "neutral": 72}
    tess, report = load_tess(shared_data / "tess")
    assert report.kept == 1600 and not report.dropped
    assert Counter(u.speaker for u in tess) == {"tess_OAF": 800, "tess_YAF": 800}


@pytest.mark.shared_data("goemotions")
def test_real_goemotions_counts(shared_data):
    samples, report = load_goemotions(shared_data / "goemotions" / "train.tsv")
    assert report.total == 43410
    assert report.kept == len(samples) == 34658
    assert report.dropped["multi_label"] == 3855


@pytest.mark.shared_data("savee")
def test_real_savee_counts(shared_data):
    savee, report = load_savee(shared_data / "savee")
    assert report.kept == len(savee) == 300 and not report.dropped
    assert Counter(u.speaker for u in savee) == {f"savee_{s}": 75 for s in ("DC", "JE", "JK", "KL")}
    for speaker in ("DC", "JE", "JK", "KL"):
        assert Counter(u.label for u in savee if u.speaker == f"savee_{speaker}") == {
            "angry": 15, "happy": 15, "sad": 15, "neutral": 30
        }


@pytest.mark.shared_data("dailydialog")
def test_real_dailydialog_counts_and_splits(shared_data):
    folder = shared_data / "dailydialog"
    everything, report = load_dailydialog(folder)
    assert report.total == 8069 + 7740  # every utterance of validation and test, kept or counted
    assert report.kept == 15508 and report.dropped == {"disgust": 50, "fear": 28, "surprise": 223}
    assert Counter(s.label for s in everything) == {"neutral": 13429, "happy": 1703, "angry": 195, "sad": 181}
    splits = {split: load_dailydialog(folder, split=split) for split in TEXT_SPLITS}
    assert {split: r.kept for split, (_, r) in splits.items()} == {"train": 7948, "dev": 3781, "test": 3749}
    assert splits["dev"][1].dropped["dialogue_in_train"] + splits["test"][1].dropped["dialogue_in_train"] == 30
    assert Counter(s.label for s in splits["test"][0]) == {"neutral": 3125, "happy": 510, "angry": 48, "sad": 66}
    clitic = re.compile(r"\w ?[\u2019'] (s|re|ve|ll|d|m|t)\b")  # "I ’ ll", "can ’ t": joined as written
    assert not any(clitic.search(s.text) for s in everything)
    assert sum("I'm" in s.text for s in everything) > 500


@pytest.mark.shared_data("isear")
def test_real_isear_counts_and_splits(shared_data):
    folder = shared_data / "isear"
    isear, report = load_isear(folder)
    assert report.total == 7666 and report.kept == 3255
    assert report.dropped == {"disgust": 1096, "fear": 1095, "guilt": 1093, "shame": 1096, "no_situation": 31}
    assert Counter(s.label for s in isear) == {"happy": 1089, "angry": 1085, "sad": 1081}
    kept = {split: load_isear(folder, split=split)[1].kept for split in TEXT_SPLITS}
    assert kept == {"train": 2542, "dev": 349, "test": 364} and sum(kept.values()) == 3255
    assert not any("\u00e1" in s.text or "\\" in s.text for s in isear)


@pytest.mark.shared_data("ravdess")
def test_real_clip_reaches_the_recogniser_trimmed(shared_data, tmp_path):
    """A real RAVDESS clip (silence around the words): the recogniser gets it trimmed, exactly as
    features.load_clip reads it for the MFCCs and as the app's Whisper hears it."""
    from train.features import load_clip

    clip = shared_data / "ravdess" / "Actor_01" / "03-01-01-01-01-01-01.flac"
    asr = FakeTranscriber()
    transcripts_for([Utterance(clip, None, "neutral", "ravdess_01", "ravdess", clip.stem)], asr, tmp_path)
    (heard,) = asr.calls
    assert np.array_equal(heard, load_clip(clip))
    assert len(heard) < 0.7 * len(sf.read(clip)[0])  # about half of the file is silence


def test_a_shared_folder_lacking_a_corpus_skips_with_its_name(tmp_path, monkeypatch):
    """The shared_data marker names the corpora a test reads: where ../shared/data lacks one (or
    holds an empty folder for it), the test is skipped with that name, not failed."""
    import conftest

    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path / "data")
    assert conftest.missing_shared_data(()) == f"{tmp_path / 'data'} not present"
    (tmp_path / "data" / "ravdess" / "Actor_01").mkdir(parents=True)
    (tmp_path / "data" / "tess").mkdir()  # empty: as good as absent
    assert conftest.missing_shared_data(()) is None
    assert conftest.missing_shared_data(("ravdess",)) == f"{tmp_path / 'data'} lacks ravdess"
    (tmp_path / "data" / "ravdess" / "Actor_01" / "03-01-01-01-01-01-01.flac").write_bytes(b"x")
    assert conftest.missing_shared_data(("ravdess",)) is None
    assert conftest.missing_shared_data(("ravdess", "tess", "goemotions")) == f"{tmp_path / 'data'} lacks tess, goemotions"


def test_only_clips_without_words_of_their_own_are_sent_to_the_recogniser():
    from train.transcripts import with_missing_transcripts

    utterances = [Utterance(Path("a.wav"), "Kids are talking by the door", "sad", "r1", "ravdess", "a"),
                  Utterance(Path("b.wav"), None, "happy", "s1", "savee", "b"),
                  Utterance(None, None, "happy", "", "manifest", "c"),  # no audio: nothing to hear
                  Utterance(Path("d.wav"), "", "angry", "s1", "savee", "d")]
    asked = []

    def asr(items):
        asked.append([u.utterance_id for u in items])
        return [replace(u, transcript=f"heard {u.utterance_id}") for u in items], "fake-asr"

    filled, name, heard = with_missing_transcripts(utterances, asr)
    assert asked == [["b", "d"]] and name == "fake-asr" and heard == 2
    assert [u.transcript for u in filled] == ["Kids are talking by the door", "heard b", None, "heard d"]
    assert with_missing_transcripts(filled[:1], asr) == (filled[:1], None, 0) and len(asked) == 1
