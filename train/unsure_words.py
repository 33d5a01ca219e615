"""What Whisper's words for speech it cannot follow cost the voice, and what leaving them out buys.

Whisper tiny.en knows English only: speech in another language comes out as fluent English words
it is unsure of, and the recognizer leaves out Whisper's words below `transcript.UNSURE_LOG_PROBABILITY`
(`EmotionRecognizer.skip_unsure_words`). This measures both on a checkpoint and clips it never
heard (a cv fold's model and its test speakers: `RUN/folds/FOLD/model/fold.json`):

    python -m train unsure-words --checkpoint RUN/folds/FOLD/model --audio ravdess=PATH --audio savee=PATH \\
        --speakers ravdess_01,ravdess_10,ravdess_15,savee_KL --speech foreign/    # recordings in other languages

Whisper transcribes every --speech recording (its words and their mean log-probability are
listed); each clip is then paired with one of those transcripts at random (seeded) and scored
from the voice alone, with the words, and with the words left out where Whisper was unsure. Each
clip's own speech is transcribed too: how many of those English words would be left out.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np

from train.protocol import unweighted_accuracy

VARIANTS = ("voice alone", "with the words", "unsure words left out")


def pair_and_score(recognizer, clips, transcripts, seed: int = 0, whisper=None) -> list[dict]:
    """clips: (audio path, label, corpus); transcripts: transcript.Transcript of the foreign speech. One
    row per clip, with the label each variant gives (a clip with no speech in it is skipped); with
    `whisper`, also whether Whisper is unsure of the clip's own words (what leaving out costs them)."""
    from ser_demo.transcript import is_unsure
    from ser_demo.ingest import AudioInputError

    foreign = [t for t in transcripts if t.text.strip()]
    if not foreign:
        raise SystemExit("Whisper heard no words in any --speech recording")
    draw, rows = random.Random(seed), []
    for path, label, corpus in clips:
        words = draw.choice(foreign)
        try:  # one reading of the clip (ingestion, encoder pass, audio features) serves every answer
            heard = recognizer.listen(str(path), None, words.text, "both", max_seconds=None, features=True)
        except AudioInputError:
            continue

        def answer(text: str, modality: str) -> str:  # what `predict` answers from the same reading
            inputs = recognizer.prepare(heard.waveform, text, modality, heard.encoded, heard.features)
            return recognizer.labels[int(np.argmax(recognizer.forward(inputs)[0]))]

        alone, read = answer("", "audio"), answer(words.text, "both")
        rows.append({"audio": str(path), "corpus": corpus, "label": label, "words": words.text,
                     "log_probability": words.log_probability, VARIANTS[0]: alone, VARIANTS[1]: read,
                     VARIANTS[2]: alone if is_unsure(words.words) else read})
        if whisper is not None:
            own = whisper.transcribe(heard.waveform)
            rows[-1] |= {"own words": own.text, "own log_probability": own.log_probability,
                         "own words unsure": is_unsure(own.words)}
    return rows


def summary(rows: list[dict], labels) -> dict:
    """UA (%) of each variant over all clips and per corpus, and how many answers the words changed."""
    groups = {"all": rows} | {c: [r for r in rows if r["corpus"] == c] for c in sorted({r["corpus"] for r in rows})}
    return {name: {"clips": len(group), **{v: 100 * unweighted_accuracy([r["label"] for r in group],
                                                                        [r[v] for r in group], labels)
                                           for v in VARIANTS},
                   "changed by the words": 100 * float(np.mean([r[VARIANTS[0]] != r[VARIANTS[1]] for r in group])),
                   "own words unsure": sum(bool(r.get("own words unsure")) for r in group)}
            for name, group in groups.items() if group}


def command(args) -> int:
    from ser_demo import EmotionRecognizer
    from ser_demo.asr import load_transcriber
    from ser_demo.transcript import is_unsure
    from ser_demo.batch import audio_files
    from ser_demo.ingest import load_audio
    from train.datasets import load_speakers

    recognizer = EmotionRecognizer.from_pretrained(args.checkpoint)
    whisper = load_transcriber(args.asr_backend, args.asr_model)
    try:  # Whisper's temperature fallback samples: --seed draws those samples too
        import ctranslate2

        ctranslate2.set_random_seed(args.seed)
    except ImportError:
        pass
    transcripts = []
    for path in audio_files(args.speech):
        transcript = whisper.transcribe(load_audio(path, max_seconds=None, trim_silence=True))
        transcripts.append(transcript)
        confidence = "-" if transcript.log_probability is None else f"{transcript.log_probability:.2f}"
        print(f"{path.name}: {confidence}{' (unsure)' if is_unsure(transcript.words) else ''} {transcript.text!r}",
              file=sys.stderr)
    clips, found = [], set()
    for corpus, data in (spec.split("=", 1) for spec in args.audio):
        utterances, _ = load_speakers(corpus, data, args.speakers, strict=False)
        clips += [(u.audio_path, u.label, corpus) for u in utterances if u.label in recognizer.labels]
        found |= {u.speaker for u in utterances}
    missing = set(args.speakers.split(",")) - found if args.speakers else set()
    if missing:
        raise SystemExit(f"--speakers: no clips of {', '.join(sorted(missing))} in any --audio corpus")
    rows = pair_and_score(recognizer, clips, transcripts, args.seed, whisper)
    result = {"checkpoint": args.checkpoint, "speakers": args.speakers, "seed": args.seed,
              "transcripts": [{"text": t.text, "log_probability": t.log_probability, "unsure": is_unsure(t.words)}
                              for t in transcripts],
              "summary": summary(rows, recognizer.labels), "clips": rows}
    lines = ["| clips | n | UA " + " | UA ".join(VARIANTS) + " | answers the words changed | own words unsure |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {s['clips']} | " + " | ".join(f"{s[v]:.1f}" for v in VARIANTS)
              + f" | {s['changed by the words']:.1f} % | {s['own words unsure']} |" for name, s in result["summary"].items()]
    unsure = sum(t["unsure"] for t in result["transcripts"] if t["text"].strip())
    lines.append(f"\n{unsure} of {sum(bool(t['text'].strip()) for t in result['transcripts'])} transcripts with words "
                 "were unsure (left out).")
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "unsure-words.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out / 'unsure-words.json'}", file=sys.stderr)
    return 0


def add_arguments(p) -> None:
    from train.arguments import whisper_arguments

    p.add_argument("--checkpoint", required=True, help="folder or Hub repo id (audio + text), e.g. a cv fold's model")
    p.add_argument("--audio", action="append", required=True, metavar="CORPUS=PATH", help="clips to score (repeatable)")
    p.add_argument("--speakers", default=None, help="only these speakers, comma-separated (a fold's fold.json)")
    p.add_argument("--speech", nargs="+", required=True, help="recordings in languages Whisper does not know (files or folders)")
    p.add_argument("--seed", type=int, default=0,
                   help="draws which transcript each clip is paired with (and faster-whisper's fallback samples)")
    whisper_arguments(p)
    p.add_argument("--out", default="runs/unsure-words", help="folder for unsure-words.json")
