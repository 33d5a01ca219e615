"""Make the app's example clips with espeak-ng: `python examples/make_examples.py`.

Synthetic speech, made by the project itself (no corpus audio is ever committed). Each clip is
16 kHz mono 16-bit WAV; the voice settings (speed, pitch, loudness) only hint at the emotion, the
words carry most of it. `examples.json` lists file, transcript and the intended emotion.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = [
    # file, intended emotion, transcript, espeak-ng settings (voice, words/min, pitch 0-99, amplitude)
    ("angry.wav", "angry", "I told you a hundred times, stop touching my things!", ("en-us", 185, 65, 190)),
    ("happy.wav", "happy", "That is wonderful news, I am so happy for you!", ("en-us+f3", 170, 85, 140)),
    ("sad.wav", "sad", "I miss her so much, nothing feels the same without her.", ("en-us", 115, 25, 90)),
    ("neutral.wav", "neutral", "The meeting starts at ten o'clock in the second room.", ("en-us", 155, 50, 120)),
]


def synthesize(text: str, path: Path, voice="en-us", speed=160, pitch=50, amplitude=120) -> None:
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    ffmpeg = shutil.which("ffmpeg")
    if espeak is None or ffmpeg is None:
        sys.exit("needs espeak-ng and ffmpeg (apt-get install espeak-ng ffmpeg)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run([espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude),
                        "-w", str(raw), text], check=True)
        # 16 kHz mono 16-bit, with 0.2 s of silence before and after
        subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(raw), "-af",
                        "adelay=200,apad=pad_dur=0.2", "-ar", "16000", "-ac", "1", "-sample_fmt", "s16",
                        "-bitexact", "-map_metadata", "-1", str(path)], check=True)


def main() -> None:
    listing = []
    for name, emotion, text, (voice, speed, pitch, amplitude) in EXAMPLES:
        synthesize(text, HERE / name, voice, speed, pitch, amplitude)
        listing.append({"file": name, "transcript": text, "emotion": emotion})
    (HERE / "examples.json").write_text(json.dumps(listing, indent=2) + "\n")
    print(f"wrote {len(listing)} clips to {HERE}")


if __name__ == "__main__":
    main()
