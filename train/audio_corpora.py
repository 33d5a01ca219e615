"""Adapters for the audio corpora in their own release layouts: IEMOCAP, RAVDESS, TESS, CREMA-D,
EmoDB and SAVEE. Each maps its emotions onto the paper's four classes (``LABELS``) and returns
``(utterances, LoadReport)``, every dropped file counted by reason.

IEMOCAP reads its evaluation and transcription files; the acted corpora code speaker, sentence and
emotion in their file names, read by one parser each through :func:`_load_coded_files`. The
registry, the CSV manifest for any other corpus and the text corpora are reached through
train/datasets.py (:func:`load_corpus`). Data preparation only: no features, no model, no audio read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from train.records import LABELS, LoadReport, Tally, Utterance

AUDIO_EXTENSIONS = (".wav", ".flac")


def _audio_files(root: Path) -> list[Path]:
    """All .wav/.flac files under root, sorted so that every loader is deterministic."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file() and not p.name.startswith("._")
    )


def _require_dir(path: str | os.PathLike, corpus: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{corpus}: no such folder {path}")
    return path


class _Coded(NamedTuple):
    """What a coded file name says about its utterance (see :func:`_load_coded_files`)."""

    emotion: str  # the corpus's emotion in words; kept only if it is one of LABELS
    transcript: str | None
    speaker: str


def _load_coded_files(
    path: str | os.PathLike,
    corpus: str,
    parse: Callable[[Path], _Coded | str],
    *,
    audio_folder: str | None = None,
) -> tuple[list[Utterance], LoadReport]:
    """Utterances of a corpus whose file names code speaker, text and emotion.

    ``parse(audio_path)`` reads one file's name: a :class:`_Coded`, or a string saying why the
    file is dropped. Emotions outside LABELS are dropped and counted under their own name.
    ``audio_folder``: the release's audio subfolder, read instead of ``path`` when present.
    """
    root = _require_dir(path, corpus)
    if audio_folder and (root / audio_folder).is_dir():
        root = root / audio_folder
    tally = Tally(corpus)
    utterances = []
    for audio_path in _audio_files(root):
        coded = parse(audio_path)
        if isinstance(coded, str):
            tally.drop(coded)
            continue
        if coded.emotion not in LABELS:
            tally.drop(coded.emotion)
            continue
        tally.keep()
        utterances.append(
            Utterance(
                audio_path=audio_path,
                transcript=coded.transcript,
                label=coded.emotion,
                speaker=coded.speaker,
                corpus=corpus,
                utterance_id=audio_path.stem,
            )
        )
    return utterances, tally.report()


# --------------------------------------------------------------------------------------------
# IEMOCAP: IEMOCAP_full_release/Session{1..5}/dialog/{EmoEvaluation,transcriptions}/*.txt,
#          sentences/wav/<dialog>/<utterance>.wav
# --------------------------------------------------------------------------------------------

# The paper's 4-class set: happy merged with excited (1103 ang, 1636 hap+exc, 1084 sad, 1708 neu).
IEMOCAP_LABELS = {"ang": "angry", "hap": "happy", "exc": "happy", "sad": "sad", "neu": "neutral"}

# "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"
_IEMOCAP_EVAL_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(Ses\w+)\s+(\w+)\s+\[")
# "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me."
_IEMOCAP_TRANSCRIPT_LINE = re.compile(r"^(Ses\w+)\s+\[[^\]]*\]:\s?(.*)$")
# Transcribers' annotations inside a turn: [LAUGHTER], [BREATHING], [GARBAGE], [LIPSMACK] ...
_IEMOCAP_TAG = re.compile(r"\[[^\]]*\]")


def _iemocap_root(path: Path) -> Path:
    """Accept the release folder itself or the folder that contains it."""
    if (path / "IEMOCAP_full_release").is_dir():
        return path / "IEMOCAP_full_release"
    return path


def _iemocap_speaker(utterance_id: str) -> str:
    # Ses01F_impro01_M000: the dialog name says who wore the markers (F); the last part says who
    # speaks this turn (M). The speaker is session + the speaking actor's gender: "Ses01M".
    return utterance_id[:5] + utterance_id.rsplit("_", 1)[1][0]


def load_iemocap(
    path: str | os.PathLike,
    *,
    sessions: Sequence[int] | None = None,
    label_map: dict[str, str] | None = None,
    require_audio: bool = True,
) -> tuple[list[Utterance], LoadReport]:
    """IEMOCAP in its official release layout, 4 classes with happy + excited merged.

    ``sessions``: which of Session1..5 to read; None reads every Session folder present.
    """
    root = _iemocap_root(_require_dir(path, "iemocap"))
    label_map = IEMOCAP_LABELS if label_map is None else label_map
    if sessions is None:
        session_dirs = sorted(p for p in root.glob("Session[0-9]") if p.is_dir())
        if not session_dirs:
            raise FileNotFoundError(f"iemocap: no Session1..5 folders in {root}")
    else:
        session_dirs = [root / f"Session{n}" for n in sessions]
    tally = Tally("iemocap")
    utterances = []
    for session_dir in session_dirs:
        if not session_dir.is_dir():
            raise FileNotFoundError(f"iemocap: no such folder {session_dir}")
        transcripts = _iemocap_transcripts(session_dir / "dialog" / "transcriptions")
        for eval_file in sorted((session_dir / "dialog" / "EmoEvaluation").glob("*.txt")):
            if eval_file.name.startswith("._"):
                continue
            for line in eval_file.read_text(encoding="utf-8", errors="replace").splitlines():
                match = _IEMOCAP_EVAL_LINE.match(line)
                if not match:
                    continue  # header, annotator lines ("C-E2: ..."), blank lines
                utterance_id, code = match.groups()
                if code not in label_map:
                    tally.drop(code)  # fru, sur, fea, dis, oth, xxx (no agreement)
                    continue
                dialog = utterance_id.rsplit("_", 1)[0]
                audio_path = session_dir / "sentences" / "wav" / dialog / f"{utterance_id}.wav"
                if not audio_path.exists():
                    flac = audio_path.with_suffix(".flac")
                    if flac.exists():
                        audio_path = flac
                    elif require_audio:
                        tally.drop("missing_audio")
                        continue
                tally.keep()
                utterances.append(
                    Utterance(
                        audio_path=audio_path,
                        transcript=transcripts.get(utterance_id),
                        label=label_map[code],
                        speaker=_iemocap_speaker(utterance_id),
                        corpus="iemocap",
                        utterance_id=utterance_id,
                        session=utterance_id[:5],
                    )
                )
    return utterances, tally.report()


def _iemocap_transcripts(folder: Path) -> dict[str, str]:
    transcripts = {}
    for transcript_file in sorted(folder.glob("*.txt")):
        if transcript_file.name.startswith("._"):
            continue
        for line in transcript_file.read_text(encoding="utf-8", errors="replace").splitlines():
            match = _IEMOCAP_TRANSCRIPT_LINE.match(line.strip())
            if match:
                # the annotations are not words anyone said: keep them from the text branch
                transcripts[match.group(1)] = " ".join(_IEMOCAP_TAG.sub(" ", match.group(2)).split())
    return transcripts


# --------------------------------------------------------------------------------------------
# RAVDESS: Actor_XX/03-01-EE-II-SS-RR-AA.wav
# --------------------------------------------------------------------------------------------

RAVDESS_EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}  # fmt: skip
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def load_ravdess(
    path: str | os.PathLike, *, calm_as_neutral: bool = False
) -> tuple[list[Utterance], LoadReport]:
    """RAVDESS speech (audio-only modality 03, vocal channel 01); song files are dropped."""
    return _load_coded_files(path, "ravdess", lambda p: _ravdess_name(p, calm_as_neutral))


def _ravdess_name(audio_path: Path, calm_as_neutral: bool) -> _Coded | str:
    match = _RAVDESS_NAME.match(audio_path.stem)
    if not match:
        return "unparsed_name"
    modality, channel, emotion_code, _intensity, statement, _repetition, actor = match.groups()
    if modality != "03" or channel != "01":
        return "not_audio_only_speech"
    emotion = RAVDESS_EMOTIONS.get(emotion_code, f"code_{emotion_code}")
    if emotion == "calm" and calm_as_neutral:
        emotion = "neutral"
    return _Coded(emotion, RAVDESS_STATEMENTS.get(statement), f"ravdess_{actor}")


# --------------------------------------------------------------------------------------------
# TESS: {OAF,YAF}_{emotion}/OAF_word_emotion.wav
# --------------------------------------------------------------------------------------------

# Folder and file names in the release are inconsistent ("OAF_Fear" / "YAF_fear",
# "OAF_Pleasant_surprise" / "YAF_pleasant_surprised", files "..._ps.wav", and one file named
# "OA_bite_neutral.wav" in OAF_neutral); normalise them.
TESS_EMOTIONS = {
    "angry": "angry", "happy": "happy", "sad": "sad", "neutral": "neutral",
    "disgust": "disgust", "fear": "fear",
    "pleasant_surprise": "pleasant_surprise", "pleasant_surprised": "pleasant_surprise",
    "ps": "pleasant_surprise",
}  # fmt: skip
_TESS_NAME = re.compile(r"^([OY]AF?)_(.+)_([A-Za-z]+)$", re.IGNORECASE)
_TESS_FOLDER = re.compile(r"^(OAF|YAF)_(.+)$", re.IGNORECASE)


def load_tess(path: str | os.PathLike) -> tuple[list[Utterance], LoadReport]:
    """Toronto Emotional Speech Set: two speakers (OAF, YAF), "Say the word <word>"."""
    return _load_coded_files(path, "tess", _tess_name)


def _tess_name(audio_path: Path) -> _Coded | str:
    name = _TESS_NAME.match(audio_path.stem)
    if not name:
        return "unparsed_name"
    file_speaker, word, file_emotion = name.groups()
    # The folder is the authority on speaker and emotion (file names abbreviate: "OA_",
    # "_ps"); fall back to the file name when files sit outside {OAF,YAF}_<emotion> folders.
    folder = _TESS_FOLDER.match(audio_path.parent.name)
    speaker = folder.group(1).upper() if folder else file_speaker.upper().ljust(3, "F")
    raw_emotion = (folder.group(2) if folder else file_emotion).lower()
    emotion = TESS_EMOTIONS.get(raw_emotion, raw_emotion)
    return _Coded(emotion, f"Say the word {word.lower()}", f"tess_{speaker.upper()}")


# --------------------------------------------------------------------------------------------
# CREMA-D: AudioWAV/1001_DFA_ANG_XX.wav
# --------------------------------------------------------------------------------------------

CREMA_D_SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
CREMA_D_EMOTIONS = {
    "ANG": "angry", "HAP": "happy", "SAD": "sad", "NEU": "neutral",
    "DIS": "disgust", "FEA": "fear",
}  # fmt: skip
_CREMA_D_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})$")


def load_crema_d(path: str | os.PathLike) -> tuple[list[Utterance], LoadReport]:
    """CREMA-D: 91 actors, 12 sentences; ANG/HAP/SAD/NEU kept."""
    return _load_coded_files(path, "crema-d", _crema_d_name, audio_folder="AudioWAV")


def _crema_d_name(audio_path: Path) -> _Coded | str:
    match = _CREMA_D_NAME.match(audio_path.stem)
    if not match or match.group(2) not in CREMA_D_SENTENCES:
        return "unparsed_name"
    actor, sentence, emotion_code, _level = match.groups()
    emotion = CREMA_D_EMOTIONS.get(emotion_code, emotion_code.lower())
    return _Coded(emotion, CREMA_D_SENTENCES[sentence], f"crema-d_{actor}")


# --------------------------------------------------------------------------------------------
# EmoDB (Berlin): wav/03a01Fa.wav = speaker 03, text a01, emotion F, version a
# --------------------------------------------------------------------------------------------

EMODB_SENTENCES = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
# German initials: W Ärger (anger), F Freude, T Trauer, N neutral; L Langeweile, E Ekel, A Angst.
EMODB_EMOTIONS = {
    "W": "angry", "F": "happy", "T": "sad", "N": "neutral",
    "L": "boredom", "E": "disgust", "A": "fear",
}  # fmt: skip
_EMODB_NAME = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")


def load_emodb(path: str | os.PathLike) -> tuple[list[Utterance], LoadReport]:
    """Berlin Database of Emotional Speech (German): W/F/T/N kept."""
    return _load_coded_files(path, "emodb", _emodb_name, audio_folder="wav")


def _emodb_name(audio_path: Path) -> _Coded | str:
    match = _EMODB_NAME.match(audio_path.stem)
    if not match or match.group(2) not in EMODB_SENTENCES:
        return "unparsed_name"
    speaker, text_code, emotion_letter, _version = match.groups()
    emotion = EMODB_EMOTIONS.get(emotion_letter, f"code_{emotion_letter}")
    return _Coded(emotion, EMODB_SENTENCES[text_code], f"emodb_{speaker}")


# --------------------------------------------------------------------------------------------
# SAVEE: DC_a01.wav (speaker_emotion+number), or the release's AudioData/DC/a01.wav
# --------------------------------------------------------------------------------------------

SAVEE_EMOTIONS = {
    "a": "angry", "h": "happy", "sa": "sad", "n": "neutral",
    "d": "disgust", "f": "fear", "su": "surprise",
}  # fmt: skip
_SAVEE_NAME = re.compile(r"^(?:([A-Z]{2})_)?(a|d|f|h|n|sa|su)(\d\d)$")
SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")


def load_savee(path: str | os.PathLike) -> tuple[list[Utterance], LoadReport]:
    """SAVEE: four male British speakers; a, h, sa, n kept. The speaker is the file name's prefix
    (or the speaker folder of the original release). Its TIMIT sentences are not in the file
    names, so utterances carry no transcript."""
    return _load_coded_files(path, "savee", _savee_name, audio_folder="AudioData")


def _savee_name(audio_path: Path) -> _Coded | str:
    match = _SAVEE_NAME.match(audio_path.stem)
    if not match:
        return "unparsed_name"
    speaker = match.group(1) or audio_path.parent.name
    if speaker not in SAVEE_SPEAKERS:
        return "unknown_speaker"
    return _Coded(SAVEE_EMOTIONS[match.group(2)], None, f"savee_{speaker}")
